//! Authorisation: what a caller (a [`Principal`]) may do, decided from its key's policy.
//! Checks run before any lookup, so a denial never reveals whether something exists.

use crate::error::{Result, ServiceError};
use crate::store::codec::StoredPolicy;
use memd_proto::v1::api_key_policy::Action;
use wildmatch::WildMatch;

/// The resolved identity of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` for the bootstrap admin key and for development mode.
    pub key_id: Option<String>,
    /// `None` grants everything.
    policy: Option<Policy>,
    /// The quotas this caller's requests are charged to, once decoded (see
    /// [`super::principal`]); `None` for the operator.
    limits: Option<std::sync::Arc<super::Limits>>,
}

#[derive(Debug, Clone)]
struct Policy {
    memory_ids: Vec<String>,
    actor_patterns: Vec<WildMatch>,
    raw_patterns: Vec<String>,
    namespace_prefixes: Vec<String>,
    /// The patterns include "*" itself: the key is not limited to some actors.
    all_actors: bool,
    actions: Vec<Action>,
}

impl Policy {
    fn allows_memory(&self, memory_id: &str) -> bool {
        self.memory_ids
            .iter()
            .any(|id| id == "*" || id == memory_id)
    }

    fn allows_actor(&self, actor_id: &str) -> bool {
        self.actor_patterns
            .iter()
            .any(|pattern| pattern.matches(actor_id))
    }

    /// ADMIN includes READ and WRITE within the key's scope.
    fn allows_action(&self, action: Action) -> bool {
        self.actions
            .iter()
            .any(|&a| a == action || a == Action::Admin)
    }

    fn is_global(&self) -> bool {
        self.memory_ids.iter().any(|id| id == "*") && self.all_actors
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Write => "write",
        Action::Admin => "admin",
        Action::Unspecified => "unspecified",
    }
}

impl Principal {
    /// A caller with every right (bootstrap admin key, development mode).
    pub fn superuser() -> Self {
        Self {
            key_id: None,
            policy: None,
            limits: None,
        }
    }

    /// A caller limited by a stored policy.
    pub fn with_policy(key_id: String, policy: &StoredPolicy) -> Self {
        let policy = Policy {
            memory_ids: policy.memory_ids.clone(),
            actor_patterns: policy
                .actor_patterns
                .iter()
                .map(|p| WildMatch::new(p))
                .collect(),
            all_actors: policy.actor_patterns.iter().any(|p| p == "*"),
            raw_patterns: policy.actor_patterns.clone(),
            namespace_prefixes: policy.namespace_prefixes.clone(),
            actions: policy
                .actions
                .iter()
                .filter_map(|&a| Action::try_from(a).ok())
                .collect(),
        };
        Self {
            key_id: Some(key_id),
            policy: Some(policy),
            limits: None,
        }
    }

    /// The same caller, its requests charged to `limits`.
    pub fn limited_by(self, limits: std::sync::Arc<super::Limits>) -> Self {
        Self {
            limits: Some(limits),
            ..self
        }
    }

    /// Charges a decoded request to the caller's byte quota and its memory's quotas. A
    /// memory outside the key's policy is not charged: the request is about to be denied,
    /// and a key must not be able to use up another tenant's quota.
    pub fn charge(&self, request: &impl super::MemoryScoped) -> Result<()> {
        let Some(limits) = &self.limits else {
            return Ok(());
        };
        let memory_id = match (&self.policy, request.memory_id()) {
            (Some(policy), id) if policy.allows_memory(id) => id,
            _ => "",
        };
        limits.charge(self, memory_id, request.encoded_len())
    }

    fn denied(&self, what: String) -> ServiceError {
        let key = self.key_id.as_deref().unwrap_or("?");
        ServiceError::PermissionDenied(format!("api key {key} may not {what}"))
    }

    /// Requires `action` on the memory as a whole.
    pub fn require_memory(&self, action: Action, memory_id: &str) -> Result<()> {
        match &self.policy {
            Some(p) if !(p.allows_action(action) && p.allows_memory(memory_id)) => {
                Err(self.denied(format!("{} memory {memory_id}", action_name(action))))
            }
            _ => Ok(()),
        }
    }

    /// Requires `action` on one actor of a memory.
    pub fn require_actor(&self, action: Action, memory_id: &str, actor_id: &str) -> Result<()> {
        self.require_memory(action, memory_id)?;
        match &self.policy {
            Some(p) if !p.allows_actor(actor_id) => {
                Err(self.denied(format!("{} actor {actor_id}", action_name(action))))
            }
            _ => Ok(()),
        }
    }

    /// Requires an unrestricted admin key (memory creation, key management).
    pub fn require_global_admin(&self) -> Result<()> {
        match &self.policy {
            Some(p) if !(p.allows_action(Action::Admin) && p.is_global()) => {
                Err(self.denied("manage memories and keys (needs admin on memory_ids [\"*\"] and actor_patterns [\"*\"])".into()))
            }
            _ => Ok(()),
        }
    }

    /// Whether listings show this memory to the caller (any action on it).
    pub fn sees_memory(&self, memory_id: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.allows_memory(memory_id) && !p.actions.is_empty())
    }

    /// The literal prefix every actor the caller may see starts with ("" when unrestricted):
    /// the longest common prefix of the parts of its globs before the first wildcard.
    pub fn actor_id_prefix(&self) -> String {
        let Some(policy) = &self.policy else {
            return String::new();
        };
        let literals = policy
            .raw_patterns
            .iter()
            .map(|p| &p[..p.find(['*', '?']).unwrap_or(p.len())]);
        literals
            .reduce(|common, next| {
                let shared = common
                    .bytes()
                    .zip(next.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &common[..shared]
            })
            .unwrap_or_default()
            .to_string()
    }

    /// Whether the caller may see a long-term record: its namespace is under one of the
    /// key's namespace prefixes ("*" for all) and, when it was drawn from an actor's events,
    /// the key covers that actor too.
    pub fn sees_record(&self, namespace: &str, actor_id: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| {
            p.namespace_prefixes
                .iter()
                .any(|prefix| prefix == "*" || namespace.starts_with(prefix.as_str()))
                && (actor_id.is_empty() || p.allows_actor(actor_id))
        })
    }

    /// The namespace prefixes and actor globs a search must stay within (`None`: all).
    pub fn search_scope(&self) -> (Option<Vec<String>>, Option<Vec<String>>) {
        match &self.policy {
            None => (None, None),
            Some(p) => (
                Some(p.namespace_prefixes.clone()),
                (!p.all_actors).then(|| p.raw_patterns.clone()),
            ),
        }
    }

    /// The one memory the key's policy names, if it names exactly one (and not "*").
    pub fn sole_memory(&self) -> Option<String> {
        match self.policy.as_ref()?.memory_ids.as_slice() {
            [only] if only != "*" => Some(only.clone()),
            _ => None,
        }
    }

    /// The one actor the key's policy names, if it names exactly one without wildcards.
    pub fn sole_actor(&self) -> Option<String> {
        match self.policy.as_ref()?.raw_patterns.as_slice() {
            [only] if !only.contains(['*', '?']) => Some(only.clone()),
            _ => None,
        }
    }

    /// Whether listings show this actor to the caller (read access to it).
    pub fn sees_actor(&self, actor_id: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.allows_actor(actor_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(memories: &[&str], actors: &[&str], actions: &[Action]) -> Principal {
        let policy = StoredPolicy {
            memory_ids: memories.iter().map(|s| s.to_string()).collect(),
            actor_patterns: actors.iter().map(|s| s.to_string()).collect(),
            namespace_prefixes: vec![],
            actions: actions.iter().map(|&a| a as i32).collect(),
        };
        Principal::with_policy("k1".into(), &policy)
    }

    #[test]
    fn globs_and_actions() {
        let p = key(&["m1"], &["acme/*"], &[Action::Read]);
        assert!(p.require_actor(Action::Read, "m1", "acme/alice").is_ok());
        assert!(p.require_actor(Action::Read, "m1", "globex/bob").is_err());
        assert!(p.require_actor(Action::Write, "m1", "acme/alice").is_err());
        assert!(p.require_actor(Action::Read, "m2", "acme/alice").is_err());
        assert!(p.require_global_admin().is_err());
        assert!(!p.sees_actor("acmex"));
        assert_eq!(p.actor_id_prefix(), "acme/");
        assert_eq!(
            key(&["m1"], &["acme/eu-*", "acme/us-?"], &[Action::Read]).actor_id_prefix(),
            "acme/"
        );
        assert_eq!(
            key(&["m1"], &["acme/*", "globex/*"], &[Action::Read]).actor_id_prefix(),
            ""
        );
        assert_eq!(
            key(&["m1"], &["exact-actor"], &[Action::Read]).actor_id_prefix(),
            "exact-actor"
        );
        assert_eq!(Principal::superuser().actor_id_prefix(), "");
    }

    #[test]
    fn empty_lists_deny_everything() {
        let p = key(&[], &[], &[Action::Admin]);
        assert!(p.require_memory(Action::Read, "m1").is_err());
        assert!(!p.sees_memory("m1"));
    }

    #[test]
    fn global_admin() {
        assert!(
            key(&["*"], &["*"], &[Action::Admin])
                .require_global_admin()
                .is_ok()
        );
        assert!(
            key(&["*"], &["acme/*"], &[Action::Admin])
                .require_global_admin()
                .is_err()
        );
        assert!(Principal::superuser().require_global_admin().is_ok());
    }

    #[test]
    fn sole_memory_and_actor_only_when_the_policy_names_exactly_one() {
        let narrow = key(&["m1"], &["alice"], &[Action::Read]);
        assert_eq!(narrow.sole_memory().as_deref(), Some("m1"));
        assert_eq!(narrow.sole_actor().as_deref(), Some("alice"));
        let wide = key(&["m1", "m2"], &["acme/*"], &[Action::Read]);
        assert_eq!(wide.sole_memory(), None);
        assert_eq!(wide.sole_actor(), None);
        assert_eq!(key(&["*"], &["a?"], &[Action::Read]).sole_memory(), None);
        assert_eq!(Principal::superuser().sole_actor(), None);
    }
}
