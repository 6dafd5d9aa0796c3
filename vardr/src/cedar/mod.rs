//! Layer 2: Cedar policies evaluated in userspace on every reported event.
//!
//! Layer 1 (the kernel) prevents; Layer 2 reacts. A satisfied `forbid`
//! marks the event `deny` (or `alert` with `@verdict("alert")`) after the
//! fact and may kill the process (`@response("kill")`, with `--enforce`);
//! a satisfied `permit` marks it `allow`. Forbids simple enough for the
//! kernel are also compiled into Layer 1 (see [`kernel`]).
mod eval;
pub mod kernel;
mod load;
mod request;
mod slice;

use std::sync::OnceLock;

use cedar_policy::Schema;

pub use eval::{Engine, Outcome, Verdict};
pub use load::{load_files, parse_text, CedarSet};
pub use request::{Action, Ask, Target};

/// The schema shipped with vardr (`policies/vardr.cedarschema`).
pub const SCHEMA_TEXT: &str = include_str!("../../../policies/vardr.cedarschema");

/// The Cedar namespace of vardr's entity types and actions.
pub const NAMESPACE: &str = "Vardr";

/// The parsed shipped schema (parsed once; a test proves it parses).
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| match Schema::from_cedarschema_str(SCHEMA_TEXT) {
        Ok((s, _warnings)) => s,
        // The text is compiled in and covered by unit tests.
        Err(e) => panic!("shipped Cedar schema is invalid: {e}"),
    })
}

/// What a policy asks for besides its effect, from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMeta {
    /// `@id("...")`, or `file.cedar#N` (N counts policies from 0).
    pub name: String,
    pub verdict: Verdict,
    /// `@response("kill")`: kill the process on a Layer 2 deny.
    pub kill: bool,
    /// `@severity("...")`, default medium.
    pub severity: String,
}
