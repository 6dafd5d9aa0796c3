//! Domain rules applied in userspace to plain connects: the names DNS gave
//! a connection's address, checked after the fact (the kernel checks TLS
//! server names itself, before the hello leaves).
use super::DomainPattern;
use crate::policy::Action;

/// One domain pattern of a rule, with the rule's kernel id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainRule {
    pub pattern: DomainPattern,
    pub action: Action,
    pub rule_id: u32,
}

/// How specific a pattern is: an exact name beats any suffix of it, a
/// longer suffix beats a shorter one.
fn specificity(p: &DomainPattern) -> usize {
    match p {
        DomainPattern::Exact(n) => 2 * n.len() + 1,
        DomainPattern::Suffix(n) => 2 * n.len(),
    }
}

fn strength(a: Action) -> u8 {
    match a {
        Action::Deny => 3,
        Action::Alert => 2,
        Action::Allow => 1,
        Action::Observe => 0,
    }
}

/// The rule for `name`: the most specific matching pattern; on a tie, the
/// stronger action (as the kernel's longest-prefix lookup decides).
pub fn rule_for<'a>(rules: &'a [DomainRule], name: &str) -> Option<&'a DomainRule> {
    rules
        .iter()
        .filter(|r| r.pattern.matches(name))
        .max_by_key(|r| (specificity(&r.pattern), strength(r.action)))
}

/// The strongest rule any of `names` gets (a deny for one name the address
/// was given is a deny); `None` when it is an allow or nothing matches.
pub fn decide<'a>(rules: &'a [DomainRule], names: &[String]) -> Option<&'a DomainRule> {
    names
        .iter()
        .filter_map(|n| rule_for(rules, n))
        .filter(|r| matches!(r.action, Action::Deny | Action::Alert))
        .max_by_key(|r| strength(r.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &str, action: Action, rule_id: u32) -> DomainRule {
        DomainRule {
            pattern: DomainPattern::parse(p).unwrap(),
            action,
            rule_id,
        }
    }

    #[test]
    fn the_most_specific_pattern_wins_then_the_stronger_action() {
        let rules = [
            rule("*.example.com", Action::Deny, 1),
            rule("ok.example.com", Action::Allow, 2),
            rule("*.corp.example.com", Action::Alert, 3),
            rule("evil.test", Action::Alert, 4),
            rule("evil.test", Action::Deny, 5),
        ];
        let id = |n: &str| rule_for(&rules, n).map(|r| r.rule_id);
        assert_eq!(id("a.example.com"), Some(1));
        assert_eq!(id("ok.example.com"), Some(2));
        assert_eq!(id("x.corp.example.com"), Some(3));
        assert_eq!(id("evil.test"), Some(5));
        assert_eq!(id("example.com"), None);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // An allowed name does not excuse a denied one for the same address.
        assert_eq!(
            decide(&rules, &names(&["ok.example.com", "b.example.com"])).map(|r| r.rule_id),
            Some(1)
        );
        assert_eq!(decide(&rules, &names(&["ok.example.com"])), None);
        assert_eq!(decide(&rules, &[]), None);
    }
}
