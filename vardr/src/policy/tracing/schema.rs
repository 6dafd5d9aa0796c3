//! Tetragon's TracingPolicy shape (`cilium.io/v1alpha1`), field for field,
//! so that real policies parse and a misspelt field is an error with its
//! position. Everything vardr may reject keeps its position (`Spanned`);
//! what vardr supports is decided in `validate`, not here.
// Every field exists so that `deny_unknown_fields` accepts Tetragon's whole
// schema; sections vardr rejects as a whole are never read field by field.
#![allow(dead_code)]
use std::collections::BTreeMap;

use serde::{de::IgnoredAny, Deserialize};
use serde_saphyr::Spanned;

/// A field that may be absent; present fields keep their position.
pub type Opt<T> = Option<Spanned<T>>;
/// A list field: absent, `null` and `[]` all mean "none".
pub type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingPolicyDoc {
    pub api_version: Spanned<String>,
    pub kind: Spanned<String>,
    pub metadata: Metadata,
    pub spec: Spanned<Spec>,
}

/// Kubernetes object metadata. `labels` and `annotations` are accepted and
/// have no effect (they only annotate the object for Kubernetes tooling);
/// the remaining fields are what the API server adds to a policy exported
/// with `kubectl get -o yaml`, bookkeeping that changes nothing either.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Spanned<String>,
    pub namespace: Opt<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub uid: Option<IgnoredAny>,
    pub resource_version: Option<IgnoredAny>,
    pub generation: Option<IgnoredAny>,
    pub creation_timestamp: Option<IgnoredAny>,
    pub managed_fields: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub kprobes: List<KProbeSpec>,
    pub tracepoints: List<TracepointSpec>,
    pub loader: Opt<bool>,
    pub uprobes: List<UProbeSpec>,
    pub lsmhooks: List<LsmHookSpec>,
    pub usdts: List<UsdtSpec>,
    pub fentries: List<KProbeSpec>,
    pub pod_selector: Opt<LabelSelector>,
    pub container_selector: Opt<LabelSelector>,
    pub host_selector: Opt<LabelSelector>,
    pub node_selector: Opt<LabelSelector>,
    pub lists: List<ListSpec>,
    pub enforcers: List<EnforcerSpec>,
    pub options: List<OptionSpec>,
    pub selectors_macros: Opt<BTreeMap<String, Selector>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LsmHookSpec {
    pub hook: Spanned<String>,
    pub message: Opt<String>,
    pub args: List<Arg>,
    pub selectors: List<Selector>,
    pub tags: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KProbeSpec {
    pub call: Spanned<String>,
    #[serde(rename = "return")]
    pub return_: Option<bool>,
    pub syscall: Option<bool>,
    pub message: Option<String>,
    pub args: List<Arg>,
    pub data: List<Arg>,
    pub return_arg: Option<Arg>,
    pub return_arg_action: Option<String>,
    pub selectors: List<Selector>,
    pub tags: List<String>,
    pub ignore: Option<KprobeIgnore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KprobeIgnore {
    pub call_not_found: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracepointSpec {
    pub subsystem: Spanned<String>,
    pub event: Spanned<String>,
    pub message: Option<String>,
    pub args: List<Arg>,
    pub selectors: List<Selector>,
    pub tags: List<String>,
    pub raw: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UProbeSpec {
    pub path: Spanned<String>,
    pub btf_path: Option<String>,
    pub symbols: Option<Vec<String>>,
    pub offsets: Option<Vec<u64>>,
    pub addrs: Option<Vec<u64>>,
    pub ref_ctr_offsets: Option<Vec<u64>>,
    pub message: Option<String>,
    pub selectors: List<Selector>,
    pub args: List<Arg>,
    pub data: List<Arg>,
    pub tags: List<String>,
    #[serde(rename = "return")]
    pub return_: Option<bool>,
    pub return_arg: Option<Arg>,
    pub binary_digests: Option<Vec<String>>,
    pub ignore: Option<UprobeIgnore>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UprobeIgnore {
    pub digest_verification_failure: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UsdtSpec {
    pub path: Spanned<String>,
    pub btf_path: Option<String>,
    pub provider: Spanned<String>,
    pub name: Spanned<String>,
    pub tags: List<String>,
    pub message: Option<String>,
    pub args: List<Arg>,
    pub selectors: List<Selector>,
}

/// A hook argument (`KProbeArg` in Tetragon): which argument to read and as
/// what type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Arg {
    pub index: Spanned<u32>,
    /// Tetragon's default is `auto`.
    #[serde(rename = "type")]
    pub type_: Opt<String>,
    pub resolve: Opt<String>,
    pub size_arg_index: Opt<u32>,
    pub return_copy: Opt<bool>,
    pub max_data: Opt<bool>,
    pub label: Opt<String>,
    pub source: Opt<String>,
    pub btf_type: Opt<String>,
    pub btf_type_module: Opt<String>,
}

/// A selector (`KProbeSelector`): filters ANDed, then actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    pub label: Opt<String>,
    #[serde(rename = "matchPIDs")]
    pub match_pids: List<PidSelector>,
    pub match_args: List<ArgSelector>,
    pub match_data: List<ArgSelector>,
    pub match_actions: List<ActionSelector>,
    pub match_return_args: List<ArgSelector>,
    pub match_return_actions: List<ActionSelector>,
    pub match_binaries: List<BinarySelector>,
    pub match_parent_binaries: List<BinarySelector>,
    pub match_namespaces: List<NamespaceSelector>,
    pub match_namespace_changes: List<NamespaceChangesSelector>,
    pub match_capabilities: List<CapabilitiesSelector>,
    pub match_capability_changes: List<CapabilitiesSelector>,
    pub match_workloads: Opt<WorkloadsSelector>,
    pub macros: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgSelector {
    pub index: Opt<u32>,
    pub args: Opt<Vec<u32>>,
    pub operator: Spanned<String>,
    /// Tetragon declares strings; YAML numbers (`- 443`) read as their text.
    pub values: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionSelector {
    pub action: Spanned<String>,
    pub arg_url: Opt<String>,
    pub arg_fqdn: Opt<String>,
    pub arg_error: Opt<i32>,
    pub arg_sig: Opt<u32>,
    pub arg_sock: Opt<u32>,
    pub arg_index: Opt<u32>,
    pub arg_value: Opt<u32>,
    pub arg_regs: Opt<Vec<String>>,
    pub arg_new_symbol: Opt<String>,
    pub arg_new_addr: Opt<u64>,
    pub arg_new_offset: Opt<i64>,
    pub rate_limit: Opt<String>,
    pub rate_limit_scope: Opt<String>,
    pub kernel_stack_trace: Opt<bool>,
    pub user_stack_trace: Opt<bool>,
    pub ima_hash: Opt<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PidSelector {
    pub operator: Spanned<String>,
    pub values: Spanned<Vec<u32>>,
    #[serde(rename = "isNamespacePID")]
    pub is_namespace_pid: Option<bool>,
    pub follow_forks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BinarySelector {
    pub operator: String,
    pub values: Vec<String>,
    pub follow_children: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub namespace: Spanned<String>,
    pub operator: Spanned<String>,
    /// Inode numbers or `host_ns`; YAML numbers read as their text.
    pub values: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceChangesSelector {
    pub operator: String,
    pub values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapabilitiesSelector {
    #[serde(rename = "type")]
    pub type_: Opt<String>,
    pub operator: Spanned<String>,
    pub is_namespace_capability: Option<bool>,
    pub values: List<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadsSelector {
    pub pod_selector: Option<LabelSelector>,
    pub container_selector: Option<LabelSelector>,
    pub host_selector: Option<LabelSelector>,
}

/// Kubernetes' label selector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    pub name: Spanned<String>,
    pub values: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub pattern: Option<String>,
    pub validated: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionSpec {
    pub name: Spanned<String>,
    pub value: Opt<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnforcerSpec {
    pub calls: Vec<String>,
}
