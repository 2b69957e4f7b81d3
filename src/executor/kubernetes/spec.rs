//! What proctord asks of the cluster: the client configuration and, per execution,
//! a Secret (its secret values) and a Job that reads it through `envFrom`, so no
//! secret value ever appears in the Job spec.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, LocalObjectReference, PodSpec, PodTemplateSpec,
    ResourceRequirements, Secret, SecretEnvSource, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::config::KubeSettings;
use crate::executor::{ExecutorError, RunSpec};

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const EXECUTION_LABEL: &str = "proctor.io/execution";
pub const PROC_LABEL: &str = "proctor.io/proc";
/// The label selector of everything proctord creates: the one shared watch uses it.
pub const SELECTOR: &str = "app.kubernetes.io/managed-by=proctor";
pub const CONTAINER: &str = "proc";
/// Finished Jobs are removed after this long; their logs are stored by then.
pub const TTL_AFTER_FINISHED: i32 = 3600;

/// The kube client configuration PROCTOR_KUBE_* describe.
pub async fn client_config(settings: &KubeSettings) -> Result<kube::Config, String> {
    let mut config = if let Some(host) = &settings.cluster_host_name {
        let url = if host.contains("://") {
            host.clone()
        } else {
            format!("https://{host}")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("PROCTOR_KUBE_CLUSTER_HOST_NAME is not a URL: {e}"))?;
        let mut config = kube::Config::new(uri);
        if let Some(ca) = &settings.ca_cert_encoded {
            config.root_cert = Some(vec![decode_ca(ca)?]);
        }
        if let Some(basic) = &settings.basic_auth_encoded {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.expose().trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or("PROCTOR_KUBE_BASIC_AUTH_ENCODED is not base64 of user:password")?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or("PROCTOR_KUBE_BASIC_AUTH_ENCODED is not base64 of user:password")?;
            config.auth_info.username = Some(user.to_owned());
            config.auth_info.password = Some(password.to_owned().into());
        }
        config
    } else {
        match settings.config.as_deref() {
            None => kube::Config::incluster()
                .map_err(|e| format!("not running in a cluster ({e}); set PROCTOR_KUBE_CONFIG=out-of-cluster or a kubeconfig path"))?,
            Some("out-of-cluster") => kube::Config::from_kubeconfig(&Default::default())
                .await
                .map_err(|e| format!("cannot read the kubeconfig: {e}"))?,
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| format!("cannot read the kubeconfig {path}: {e}"))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| format!("cannot use the kubeconfig {path}: {e}"))?
            }
        }
    };
    config.default_namespace = settings.namespace.clone();
    Ok(config)
}

/// The CA certificate as DER, from base64 of its PEM (as the original took it) or DER.
fn decode_ca(encoded: &str) -> Result<Vec<u8>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "PROCTOR_KUBE_CA_CERT_ENCODED is not base64")?;
    let text = String::from_utf8_lossy(&bytes);
    match (
        text.find("-----BEGIN CERTIFICATE-----"),
        text.find("-----END CERTIFICATE-----"),
    ) {
        (Some(start), Some(end)) => {
            let body: String = text[start + 27..end]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|_| {
                    "PROCTOR_KUBE_CA_CERT_ENCODED holds a damaged PEM certificate".to_owned()
                })
        }
        _ => Ok(bytes),
    }
}

/// proctord's labels, over the proc's extra ones (the allowlist refuses proctord's keys;
/// proctord's win anyway).
fn labels(spec: &RunSpec) -> BTreeMap<String, String> {
    let mut labels = spec
        .pod
        .as_ref()
        .and_then(|pod| pod.labels.clone())
        .unwrap_or_default();
    labels.extend(own_labels(spec));
    labels
}

fn own_labels(spec: &RunSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), "proctor".to_owned()),
        (EXECUTION_LABEL.to_owned(), spec.execution.to_string()),
        (PROC_LABEL.to_owned(), spec.proc_name.to_string()),
    ])
}

/// The execution's Secret (named after it), or `None` when the proc has no secrets.
pub fn secret(spec: &RunSpec, namespace: &str) -> Option<Secret> {
    if spec.secrets.is_empty() {
        return None;
    }
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(spec.execution.to_string()),
            namespace: Some(namespace.to_owned()),
            labels: Some(own_labels(spec)),
            ..Default::default()
        },
        string_data: Some(
            spec.secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().clone()))
                .collect(),
        ),
        type_: Some("Opaque".to_owned()),
        ..Default::default()
    })
}

/// Makes the Secret belong to its Job, so deleting the Job deletes it.
pub fn owned_by(job: &Job) -> Result<OwnerReference, ExecutorError> {
    Ok(OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: job.metadata.name.clone().unwrap_or_default(),
        uid: job.metadata.uid.clone().ok_or_else(|| {
            ExecutorError::Refused("the cluster returned a Job without a uid".into())
        })?,
        block_owner_deletion: Some(true),
        controller: Some(false),
    })
}

/// The execution's Job.
pub fn job(spec: &RunSpec, settings: &KubeSettings) -> Job {
    let env: Vec<EnvVar> = spec
        .args
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .chain(
            [
                ("PROCTOR_EXECUTION_NAME", spec.execution.as_str()),
                ("PROCTOR_PROC_NAME", spec.proc_name.as_str()),
            ]
            .map(|(name, value)| EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                ..Default::default()
            }),
        )
        .collect();
    let env_from = (!spec.secrets.is_empty()).then(|| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: spec.execution.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }]
    });
    let annotations =
        (!settings.job_pod_annotations.is_empty()).then(|| settings.job_pod_annotations.clone());
    let pod = spec.pod.clone().unwrap_or_default();
    let resources = pod
        .resources
        .unwrap_or_default()
        .over(&settings.pod_policy.default_resources);
    let quantities = |map: BTreeMap<String, String>| {
        (!map.is_empty()).then(|| {
            map.into_iter()
                .map(|(name, quantity)| (name, Quantity(quantity)))
                .collect()
        })
    };
    let resources = (!resources.is_empty()).then(|| ResourceRequirements {
        requests: quantities(resources.requests),
        limits: quantities(resources.limits),
        ..Default::default()
    });
    let tolerations = pod.tolerations.map(|tolerations| {
        tolerations
            .into_iter()
            .map(|t| Toleration {
                key: t.key,
                operator: t.operator,
                value: t.value,
                effect: t.effect,
                toleration_seconds: t.toleration_seconds,
            })
            .collect()
    });
    let image_pull_secrets = pod.image_pull_secrets.map(|secrets| {
        secrets
            .into_iter()
            .map(|s| LocalObjectReference { name: s.name })
            .collect()
    });
    Job {
        metadata: ObjectMeta {
            name: Some(spec.execution.to_string()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels(spec)),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(spec.retries as i32),
            active_deadline_seconds: Some(spec.deadline.as_secs() as i64),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(spec)),
                    annotations,
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    node_selector: pod.node_selector,
                    tolerations,
                    service_account_name: pod.service_account_name,
                    image_pull_secrets,
                    containers: vec![Container {
                        name: CONTAINER.to_owned(),
                        image: Some(spec.image.clone()),
                        command: spec.command.clone(),
                        env: Some(env),
                        env_from,
                        resources,
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}
