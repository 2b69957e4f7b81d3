//! Kubernetes pod options a proc may ask for (`pod` in its metadata): resources,
//! `nodeSelector`, tolerations, `serviceAccountName`, `imagePullSecrets` and extra
//! labels, spelled as in a PodSpec; and the operator's [`PodPolicy`], which decides
//! which of them a proc may set (a proc cannot pick an arbitrary service account).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Label keys proctord sets itself; a proc may not set them.
const RESERVED_LABEL: &str = "app.kubernetes.io/managed-by";
const RESERVED_LABEL_PREFIX: &str = "proctor.io/";
const MAX_ENTRIES: usize = 32;

/// `requests` and `limits`, as in a container's `resources` (`{"cpu": "250m"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    /// These resources over `defaults`, key by key.
    pub fn over(&self, defaults: &Resources) -> Resources {
        let mut merged = defaults.clone();
        merged.requests.extend(self.requests.clone());
        merged.limits.extend(self.limits.clone());
        merged
    }

    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }

    /// Problems with resource names and quantities, as sentences naming the field.
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (part, map) in [("requests", &self.requests), ("limits", &self.limits)] {
            if map.len() > MAX_ENTRIES {
                problems.push(format!("{field}.{part}: at most {MAX_ENTRIES} resources"));
            }
            for (name, quantity) in map {
                if !is_resource_name(name) {
                    problems.push(format!(
                        "{field}.{part}: {:?} is not a resource name (cpu, memory, ephemeral-storage or a domain-prefixed extended resource)",
                        super::ids::truncate(name, 64)
                    ));
                } else if !is_quantity(quantity) {
                    problems.push(format!(
                        "{field}.{part}.{name}: {:?} is not a quantity such as 250m, 1, 512Mi or 1G",
                        super::ids::truncate(quantity, 64)
                    ));
                }
            }
        }
        problems
    }
}

/// A toleration, as in a PodSpec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// A reference by name (`imagePullSecrets: [{"name": "registry"}]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameRef {
    pub name: String,
}

/// The pod options of a proc's runs (Kubernetes executor), each subject to the
/// operator's [`PodPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodOptions {
    /// Over PROCTOR_KUBE_DEFAULT_RESOURCES, key by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Keys must be in PROCTOR_KUBE_ALLOWED_NODE_SELECTORS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Keys must be in PROCTOR_KUBE_ALLOWED_TOLERATIONS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Must be in PROCTOR_KUBE_ALLOWED_SERVICE_ACCOUNTS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Names must be in PROCTOR_KUBE_ALLOWED_IMAGE_PULL_SECRETS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<NameRef>>,
    /// Extra labels of the Job and its pods; keys must be in PROCTOR_KUBE_ALLOWED_LABELS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One allowlist: names, or `*` for any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed(pub Vec<String>);

impl Allowed {
    /// A comma-separated list (`*` allows anything; empty allows nothing).
    pub fn parse(text: &str) -> Self {
        Allowed(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == "*" || a == name)
    }

    fn any(&self) -> bool {
        self.0.iter().any(|a| a == "*")
    }

    /// Why `name` is refused, naming the setting.
    fn refusal(&self, field: &str, what: &str, name: &str, setting: &str) -> String {
        let name = super::ids::truncate(name, 64);
        if self.0.is_empty() {
            format!(
                "{field}: {what} {name:?} is not allowed: {setting} is empty, so no proc may set one"
            )
        } else {
            format!(
                "{field}: {what} {name:?} is not allowed ({setting} allows: {})",
                self.0.join(", ")
            )
        }
    }
}

/// What the operator lets procs ask of their pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodPolicy {
    /// Every run's resources unless its proc says otherwise (PROCTOR_KUBE_DEFAULT_RESOURCES).
    pub default_resources: Resources,
    pub service_accounts: Allowed,
    pub image_pull_secrets: Allowed,
    /// Node label keys a proc may select on.
    pub node_selectors: Allowed,
    /// Taint keys a proc may tolerate (a toleration without a key needs `*`).
    pub tolerations: Allowed,
    /// Label keys a proc may add (never proctord's own).
    pub labels: Allowed,
}

impl PodPolicy {
    /// Every problem with `pod` under this policy, as sentences naming the field and,
    /// for a refusal, the setting; empty when it may be used.
    pub fn problems(&self, pod: &PodOptions) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(resources) = &pod.resources {
            problems.extend(resources.problems("pod.resources"));
        }
        if let Some(account) = &pod.service_account_name {
            if !is_dns_subdomain(account) {
                problems.push(format!(
                    "pod.serviceAccountName: {:?} is not a valid name",
                    super::ids::truncate(account, 64)
                ));
            } else if !self.service_accounts.allows(account) {
                problems.push(self.service_accounts.refusal(
                    "pod.serviceAccountName",
                    "service account",
                    account,
                    "PROCTOR_KUBE_ALLOWED_SERVICE_ACCOUNTS",
                ));
            }
        }
        for secret in pod.image_pull_secrets.iter().flatten() {
            if !is_dns_subdomain(&secret.name) {
                problems.push(format!(
                    "pod.imagePullSecrets: {:?} is not a valid name",
                    super::ids::truncate(&secret.name, 64)
                ));
            } else if !self.image_pull_secrets.allows(&secret.name) {
                problems.push(self.image_pull_secrets.refusal(
                    "pod.imagePullSecrets",
                    "secret",
                    &secret.name,
                    "PROCTOR_KUBE_ALLOWED_IMAGE_PULL_SECRETS",
                ));
            }
        }
        for (key, value) in pod.node_selector.iter().flatten() {
            if !is_label_key(key) || !is_label_value(value) {
                problems.push(format!(
                    "pod.nodeSelector: {:?}: {:?} is not a valid label key and value",
                    super::ids::truncate(key, 64),
                    super::ids::truncate(value, 64)
                ));
            } else if !self.node_selectors.allows(key) {
                problems.push(self.node_selectors.refusal(
                    "pod.nodeSelector",
                    "node label",
                    key,
                    "PROCTOR_KUBE_ALLOWED_NODE_SELECTORS",
                ));
            }
        }
        for (i, toleration) in pod.tolerations.iter().flatten().enumerate() {
            let field = format!("pod.tolerations[{i}]");
            let operator = toleration.operator.as_deref().unwrap_or("Equal");
            if !matches!(operator, "Equal" | "Exists") {
                problems.push(format!(
                    "{field}.operator: expected Equal or Exists, got {:?}",
                    super::ids::truncate(operator, 64)
                ));
            }
            if let Some(effect) = &toleration.effect
                && !matches!(
                    effect.as_str(),
                    "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
                )
            {
                problems.push(format!(
                    "{field}.effect: expected NoSchedule, PreferNoSchedule or NoExecute, got {:?}",
                    super::ids::truncate(effect, 64)
                ));
            }
            match toleration.key.as_deref().filter(|k| !k.is_empty()) {
                None if !self.tolerations.any() => problems.push(format!(
                    "{field}: a toleration without a key tolerates every taint and needs PROCTOR_KUBE_ALLOWED_TOLERATIONS=*"
                )),
                None => {}
                Some(key) if !is_label_key(key) => problems.push(format!(
                    "{field}.key: {:?} is not a valid taint key",
                    super::ids::truncate(key, 64)
                )),
                Some(key) if !self.tolerations.allows(key) => {
                    problems.push(self.tolerations.refusal(
                        &format!("{field}.key"),
                        "taint key",
                        key,
                        "PROCTOR_KUBE_ALLOWED_TOLERATIONS",
                    ))
                }
                Some(_) => {}
            }
        }
        for (key, value) in pod.labels.iter().flatten() {
            if key == RESERVED_LABEL || key.starts_with(RESERVED_LABEL_PREFIX) {
                problems.push(format!(
                    "pod.labels: {key:?} is set by proctord itself and may not be changed"
                ));
            } else if !is_label_key(key) || !is_label_value(value) {
                problems.push(format!(
                    "pod.labels: {:?}: {:?} is not a valid label key and value",
                    super::ids::truncate(key, 64),
                    super::ids::truncate(value, 64)
                ));
            } else if !self.labels.allows(key) {
                problems.push(self.labels.refusal(
                    "pod.labels",
                    "label",
                    key,
                    "PROCTOR_KUBE_ALLOWED_LABELS",
                ));
            }
        }
        for (field, count) in [
            (
                "nodeSelector",
                pod.node_selector.as_ref().map_or(0, |m| m.len()),
            ),
            (
                "tolerations",
                pod.tolerations.as_ref().map_or(0, |v| v.len()),
            ),
            (
                "imagePullSecrets",
                pod.image_pull_secrets.as_ref().map_or(0, |v| v.len()),
            ),
            ("labels", pod.labels.as_ref().map_or(0, |m| m.len())),
        ] {
            if count > MAX_ENTRIES {
                problems.push(format!("pod.{field}: at most {MAX_ENTRIES} entries"));
            }
        }
        problems
    }
}

/// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, at most 253.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// `[prefix/]name`: a DNS subdomain prefix, a name of at most 63 alphanumerics,
/// `-`, `_`, `.`, starting and ending alphanumeric.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

/// At most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric (or empty).
fn is_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric())
}

fn is_resource_name(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || name.starts_with("hugepages-")
        || (name.contains('/') && is_label_key(name))
}

/// A Kubernetes quantity: a decimal number with an optional SI or binary suffix or
/// exponent (`250m`, `0.5`, `512Mi`, `1G`, `1e3`).
fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let exponent = |e: &str| {
        let digits = e.trim_start_matches(['+', '-']);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    };
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(exponent);
    number_ok && suffix_ok && text.len() <= 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> PodPolicy {
        PodPolicy {
            default_resources: Resources::default(),
            service_accounts: Allowed::parse("reporter, backup"),
            image_pull_secrets: Allowed::parse("registry"),
            node_selectors: Allowed::parse("node-pool,kubernetes.io/arch"),
            tolerations: Allowed::parse("dedicated"),
            labels: Allowed::parse("*"),
        }
    }

    fn pod(value: serde_json::Value) -> PodOptions {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn options_inside_the_policy_pass() {
        let ok = pod(serde_json::json!({
            "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}},
            "nodeSelector": {"node-pool": "batch", "kubernetes.io/arch": "amd64"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
            "serviceAccountName": "reporter",
            "imagePullSecrets": [{"name": "registry"}],
            "labels": {"team": "ops"}
        }));
        assert_eq!(policy().problems(&ok), Vec::<String>::new());
    }

    #[test]
    fn each_refusal_names_the_field_the_value_and_the_setting() {
        for (value, expected, why) in [
            (
                serde_json::json!({"serviceAccountName": "cluster-admin"}),
                "pod.serviceAccountName: service account \"cluster-admin\" is not allowed (PROCTOR_KUBE_ALLOWED_SERVICE_ACCOUNTS allows: reporter, backup)",
                "an account outside the list",
            ),
            (
                serde_json::json!({"imagePullSecrets": [{"name": "other"}]}),
                "PROCTOR_KUBE_ALLOWED_IMAGE_PULL_SECRETS",
                "a pull secret outside the list",
            ),
            (
                serde_json::json!({"nodeSelector": {"zone": "a"}}),
                "pod.nodeSelector: node label \"zone\" is not allowed",
                "a node label outside the list",
            ),
            (
                serde_json::json!({"tolerations": [{"operator": "Exists"}]}),
                "needs PROCTOR_KUBE_ALLOWED_TOLERATIONS=*",
                "a toleration of every taint",
            ),
            (
                serde_json::json!({"tolerations": [{"key": "dedicated", "operator": "Maybe"}]}),
                "pod.tolerations[0].operator",
                "a bad operator",
            ),
            (
                serde_json::json!({"labels": {"proctor.io/execution": "x"}}),
                "set by proctord itself",
                "proctord's own labels",
            ),
            (
                serde_json::json!({"resources": {"limits": {"cpu": "lots"}}}),
                "pod.resources.limits.cpu: \"lots\" is not a quantity",
                "a bad quantity",
            ),
            (
                serde_json::json!({"resources": {"requests": {"disk": "1"}}}),
                "is not a resource name",
                "an unknown resource",
            ),
        ] {
            let problems = policy().problems(&pod(value));
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{why}: {problems:?}"
            );
        }
    }

    #[test]
    fn an_empty_allowlist_allows_nothing_and_says_so() {
        let problems = PodPolicy::default()
            .problems(&pod(serde_json::json!({"serviceAccountName": "reporter"})));
        assert_eq!(
            problems,
            vec![
                "pod.serviceAccountName: service account \"reporter\" is not allowed: PROCTOR_KUBE_ALLOWED_SERVICE_ACCOUNTS is empty, so no proc may set one"
            ]
        );
    }

    #[test]
    fn quantities() {
        for good in ["1", "250m", "0.5", "512Mi", "1G", "1e3", "2E+2"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in [
            "", "m", "1.2.3", "12 Mi", "1X", "e3", "1e", "1é", "1e+", "1e-é",
        ] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn proc_resources_go_over_the_defaults_key_by_key() {
        let defaults = Resources {
            requests: BTreeMap::from([
                ("cpu".into(), "100m".into()),
                ("memory".into(), "64Mi".into()),
            ]),
            limits: BTreeMap::from([("memory".into(), "256Mi".into())]),
        };
        let proc = Resources {
            requests: BTreeMap::from([("cpu".into(), "1".into())]),
            limits: BTreeMap::new(),
        };
        let merged = proc.over(&defaults);
        assert_eq!(merged.requests["cpu"], "1");
        assert_eq!(merged.requests["memory"], "64Mi");
        assert_eq!(merged.limits["memory"], "256Mi");
    }
}
