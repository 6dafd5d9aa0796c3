//! Everything one policy file names, loaded and compiled together: the
//! YAML rules, its Cedar files, and the Layer 1 rules derived from them.
//! One error anywhere rejects the whole bundle, so a reload is atomic.
use std::path::{Path, PathBuf};

use super::{compile, CompileError, Limits, RuleSet};
use crate::{
    cedar::{self, kernel::KernelRules, CedarSet},
    policy::{self, Policy, PolicyError},
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Compile {
        path: PathBuf,
        #[source]
        source: CompileError,
    },
}

/// A policy with its Cedar set, compiled.
#[derive(Debug)]
pub struct Bundle {
    pub policy: Policy,
    pub cedar: CedarSet,
    pub kernel: KernelRules,
    pub rules: RuleSet,
}

/// Reads and validates the policy at `path` and the Cedar files it names.
pub fn parse(path: &Path) -> Result<(Policy, CedarSet, KernelRules), PolicyError> {
    let mut pol = policy::load(path)?;
    let cedar = cedar::load_files(&pol.cedar)?;
    let kernel = cedar::kernel::compile(&cedar);
    pol.rules.extend(kernel.enforced.iter().cloned());
    pol.rules.extend(kernel.observe.iter().cloned());
    Ok((pol, cedar, kernel))
}

/// [`parse`], then compiles the rules, numbering them from `first_id`.
pub fn load(path: &Path, first_id: u32, limits: &Limits) -> Result<Bundle, BundleError> {
    let (policy, cedar, kernel) = parse(path)?;
    let mut rules = compile(&policy, first_id, limits).map_err(|source| BundleError::Compile {
        path: path.into(),
        source,
    })?;
    rules.warnings.extend(kernel.warnings.iter().cloned());
    Ok(Bundle {
        policy,
        cedar,
        kernel,
        rules,
    })
}
