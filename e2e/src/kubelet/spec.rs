//! What to run for a pod, decided from the pod spec alone: pure functions, so the rules a
//! container runtime would apply (which executable, which environment, which directories and
//! addresses) are table-tested apart from processes and sockets.
//!
//! The box's "container runtime" only knows one image, the `partita-node` binary, and emulates
//! the pod's filesystem and network namespace by rewriting: a path under a volume's `mountPath`
//! becomes the volume's host directory, and a wildcard listen address (`0.0.0.0:<port>` or
//! `[::]:<port>`) becomes the pod's inner address. Anything it cannot honour makes the pod
//! fail with a message saying so, never run half-configured.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Probe, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The executable name the image's entrypoint stands for.
pub const NODE_EXECUTABLE: &str = "partita-node";
/// Grace period when the pod names none, as the API server defaults it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Most environment variables and arguments one container may have.
pub const MAX_ENV: usize = 1024;

/// When a container is restarted after its process exits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always (the default).
    Always,
    /// Only after a non-zero exit.
    OnFailure,
    /// Never: the pod ends with the process.
    Never,
}

impl RestartPolicy {
    /// Whether a process that exited with `success` is started again.
    pub fn restarts(self, success: bool) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => !success,
            Self::Never => false,
        }
    }
}

/// Where a volume lives on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// A claim's volume: `<root>/volumes/<ns>/<claim>`, kept across pods as a PV is.
    Claim(String),
    /// An emptyDir: `<root>/pods/<ns>/<pod>-<uid>/<volume>`, removed with the pod.
    EmptyDir,
}

/// One volume mount of the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the "container".
    pub mount_path: String,
    /// The volume's name.
    pub volume: String,
    /// Where the volume lives.
    pub kind: VolumeKind,
    /// The mount's subPath, if any.
    pub sub_path: Option<String>,
}

/// An HTTP GET probe, resolved to a port number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// The request path.
    pub path: String,
    /// The port at the pod's inner address.
    pub port: u16,
    /// Consecutive failures that make the probe fail.
    pub failure_threshold: u32,
    /// Consecutive successes that make it pass.
    pub success_threshold: u32,
    /// The probe's own timeout (the kubelet may cap it).
    pub timeout: Duration,
}

/// The container to run for a pod, as far as the spec alone decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The container's name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The arguments after the executable (command[1..] then args), not yet expanded.
    pub args: Vec<String>,
    /// TCP container ports, proxied from the pod IP.
    pub ports: Vec<u16>,
    /// The readiness probe.
    pub readiness: Option<HttpProbe>,
    /// The startup probe.
    pub startup: Option<HttpProbe>,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// The volume mounts.
    pub mounts: Vec<Mount>,
    /// How long a stopping process gets between SIGTERM and SIGKILL by default.
    pub grace: Duration,
}

/// Decides what to run for `pod`, or why the box cannot run it.
pub fn plan(pod: &Pod) -> Result<ContainerPlan, String> {
    let spec = pod.spec.as_ref().ok_or("the pod has no spec")?;
    if spec.init_containers.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err("the box does not run init containers".into());
    }
    let [container] = spec.containers.as_slice() else {
        return Err(format!(
            "the box runs pods of exactly one container; this one has {}",
            spec.containers.len()
        ));
    };
    let image = container.image.clone().unwrap_or_default();
    if !image.contains(NODE_EXECUTABLE) {
        return Err(format!(
            "image {image:?} is not a {NODE_EXECUTABLE} image; the box runs only {NODE_EXECUTABLE}"
        ));
    }
    let mut args = Vec::new();
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        let executable = &command[0];
        let name = Path::new(executable).file_name().and_then(|n| n.to_str());
        if name != Some(NODE_EXECUTABLE) {
            return Err(format!(
                "command {executable:?} is not in the image; the box runs only {NODE_EXECUTABLE}"
            ));
        }
        args.extend(command[1..].iter().cloned());
    }
    args.extend(container.args.iter().flatten().cloned());
    if args.len() > MAX_ENV {
        return Err(format!("more than {MAX_ENV} arguments"));
    }
    let mut ports = Vec::new();
    for p in container.ports.iter().flatten() {
        if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
            continue;
        }
        let port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("container port {} is out of range", p.container_port))?;
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    let restart = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => return Err(format!("unknown restartPolicy {other:?}")),
    };
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == m.name)
            .ok_or_else(|| format!("volume mount {:?} names no volume of the pod", m.name))?;
        let kind = if let Some(claim) = &volume.persistent_volume_claim {
            VolumeKind::Claim(claim.claim_name.clone())
        } else if volume.empty_dir.is_some() {
            VolumeKind::EmptyDir
        } else {
            return Err(format!(
                "volume {:?}: the box supports persistentVolumeClaim and emptyDir volumes only",
                volume.name
            ));
        };
        if m.sub_path_expr.is_some() {
            return Err(format!(
                "volume mount {:?}: subPathExpr is not supported",
                m.name
            ));
        }
        let sub_path = m.sub_path.clone().filter(|s| !s.is_empty());
        if sub_path
            .as_deref()
            .is_some_and(|s| s.split('/').any(|c| c == ".."))
        {
            return Err(format!(
                "volume mount {:?}: subPath may not contain '..'",
                m.name
            ));
        }
        mounts.push(Mount {
            mount_path: m.mount_path.trim_end_matches('/').to_string(),
            volume: m.name.clone(),
            kind,
            sub_path,
        });
    }
    let grace = spec
        .termination_grace_period_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_GRACE, Duration::from_secs);
    Ok(ContainerPlan {
        name: container.name.clone(),
        image,
        args,
        ports,
        readiness: probe(container, container.readiness_probe.as_ref())?,
        startup: probe(container, container.startup_probe.as_ref())?,
        restart,
        mounts,
        grace,
    })
}

/// The HTTP probe `probe` of `container`, with a named port resolved.
fn probe(container: &Container, probe: Option<&Probe>) -> Result<Option<HttpProbe>, String> {
    let Some(probe) = probe else {
        return Ok(None);
    };
    let Some(get) = &probe.http_get else {
        return Err("the box supports httpGet probes only".into());
    };
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("probe port {name:?} names no container port"))?,
    };
    let port = u16::try_from(port).map_err(|_| format!("probe port {port} is out of range"))?;
    let count = |v: Option<i32>, default: u32| {
        v.and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    Ok(Some(HttpProbe {
        path: get.path.clone().unwrap_or_else(|| "/".into()),
        port,
        failure_threshold: count(probe.failure_threshold, 3),
        success_threshold: count(probe.success_threshold, 1),
        timeout: Duration::from_secs(u64::from(count(probe.timeout_seconds, 1))),
    }))
}

/// The ConfigMaps and Secrets the container's environment reads: `(config maps, secrets)`.
pub fn env_sources(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    (maps, secrets)
}

/// What the downward API and key references can read.
#[derive(Clone, Debug, Default)]
pub struct EnvInputs {
    /// The pod IP.
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// The node's name.
    pub node_name: String,
    /// The ConfigMaps found, by name (a missing one is absent).
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// The Secrets found, by name.
    pub secrets: BTreeMap<String, Secret>,
}

fn config_map_value(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
        .or_else(|| {
            cm.binary_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
}

/// Sets `name` to `value`, keeping the first position of a name set twice.
fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    }
}

/// The value of downward API field `path` of `pod`.
fn field(pod: &Pod, path: &str, inputs: &EnvInputs) -> Result<String, String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = keyed("metadata.labels['", meta.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = keyed("metadata.annotations['", meta.annotations.as_ref()) {
        return Ok(v);
    }
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| inputs.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => inputs.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => inputs.host_ip.clone(),
        other => return Err(format!("the box does not support fieldRef {other:?}")),
    })
}

/// The container's environment: `envFrom` first, then `env` (later names override earlier
/// ones), with `$(VAR)` references in `env` values expanded as the kubelet does. An error
/// names a missing ConfigMap, Secret or key (a `CreateContainerConfigError`).
pub fn resolve_env(pod: &Pod, inputs: &EnvInputs) -> Result<Vec<(String, String)>, String> {
    let container = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .ok_or("the pod has no container")?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            match inputs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match inputs.secrets.get(&r.name) {
                Some(s) => {
                    for k in s.data.iter().flat_map(|d| d.keys()) {
                        let v = secret_value(s, k).unwrap_or_default();
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path, inputs)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = inputs
                        .config_maps
                        .get(&r.name)
                        .ok_or_else(|| format!("configmap \"{}\" not found", r.name));
                    match found.map(|cm| config_map_value(cm, &r.key)) {
                        Ok(Some(v)) => v,
                        _ if r.optional == Some(true) => continue,
                        Ok(None) => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = inputs
                        .secrets
                        .get(&r.name)
                        .ok_or_else(|| format!("secret \"{}\" not found", r.name));
                    match found.map(|s| secret_value(s, &r.key)) {
                        Ok(Some(v)) => v,
                        _ if r.optional == Some(true) => continue,
                        Ok(None) => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    return Err(format!(
                        "env {}: the box supports fieldRef, configMapKeyRef and secretKeyRef",
                        var.name
                    ));
                }
            }
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    if env.len() > MAX_ENV {
        return Err(format!("more than {MAX_ENV} environment variables"));
    }
    Ok(env)
}

/// Expands `$(NAME)` with `env`'s values, as Kubernetes does in env values, command and args:
/// `$$` is a literal `$`, and a reference to an unknown name is left as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The host directory of a mount for pod `pod` (uid `uid`) in namespace `ns` under `root`.
pub fn host_dir(root: &Path, ns: &str, pod: &str, uid: &str, mount: &Mount) -> PathBuf {
    let base = match &mount.kind {
        VolumeKind::Claim(claim) => root.join("volumes").join(ns).join(claim),
        VolumeKind::EmptyDir => pod_dir(root, ns, pod, uid).join(&mount.volume),
    };
    match &mount.sub_path {
        Some(sub) => base.join(sub.trim_start_matches('/')),
        None => base,
    }
}

/// The pod's own directory (its emptyDirs and working directory), removed with the pod.
pub fn pod_dir(root: &Path, ns: &str, pod: &str, uid: &str) -> PathBuf {
    root.join("pods").join(ns).join(format!("{pod}-{uid}"))
}

/// Rewrites one environment value or argument from the container's view to the host's: a
/// wildcard listen address becomes the pod's inner address, and a path at or under a mount
/// path (the whole value, or the part after `=` of a `--flag=value`) becomes the host path.
/// `mounts` is `(mountPath, host directory)`.
pub fn rewrite(value: &str, inner: Ipv4Addr, mounts: &[(String, PathBuf)]) -> String {
    let addressed = value
        .replace("0.0.0.0:", &format!("{inner}:"))
        .replace("[::]:", &format!("{inner}:"));
    if let Some(path) = rewrite_path(&addressed, mounts) {
        return path;
    }
    if addressed.starts_with('-')
        && let Some((flag, rhs)) = addressed.split_once('=')
        && let Some(path) = rewrite_path(rhs, mounts)
    {
        return format!("{flag}={path}");
    }
    addressed
}

fn rewrite_path(value: &str, mounts: &[(String, PathBuf)]) -> Option<String> {
    let mut sorted: Vec<&(String, PathBuf)> = mounts.iter().collect();
    sorted.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    sorted.into_iter().find_map(|(mount, host)| {
        let rest = value.strip_prefix(mount.as_str())?;
        if mount.is_empty() || !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(format!("{}{rest}", host.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
        EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
        PodSpec, Volume, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node_pod() -> Pod {
        let field = |name: &str, path: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                name: Some("s-0".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "node".into(),
                    image: Some("example.com/partita-node:1".into()),
                    command: Some(vec!["partita-node".into()]),
                    args: Some(vec!["--fsync=always".into()]),
                    env_from: Some(vec![EnvFromSource {
                        config_map_ref: Some(ConfigMapEnvSource {
                            name: "cfg".into(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }]),
                    env: Some(vec![
                        field("PARTITA_NODE_ID", "metadata.name"),
                        field("PARTITA_ADVERTISE_HOST", "status.podIP"),
                        EnvVar {
                            name: "GREETING".into(),
                            value: Some("$(PARTITA_NODE_ID) at $$(x)".into()),
                            ..Default::default()
                        },
                    ]),
                    ports: Some(vec![
                        ContainerPort {
                            name: Some("http".into()),
                            container_port: 8379,
                            ..Default::default()
                        },
                        ContainerPort {
                            name: Some("udp".into()),
                            container_port: 53,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    readiness_probe: Some(Probe {
                        http_get: Some(HTTPGetAction {
                            path: Some("/readyz".into()),
                            port: IntOrString::String("http".into()),
                            ..Default::default()
                        }),
                        failure_threshold: Some(2),
                        ..Default::default()
                    }),
                    volume_mounts: Some(vec![
                        VolumeMount {
                            name: "data".into(),
                            mount_path: "/data".into(),
                            ..Default::default()
                        },
                        VolumeMount {
                            name: "tmp".into(),
                            mount_path: "/tmp/".into(),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                volumes: Some(vec![
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "data-s-0".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Volume {
                        name: "tmp".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    },
                ]),
                termination_grace_period_seconds: Some(60),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn plans_the_operator_s_node_container() {
        let plan = plan(&node_pod()).unwrap();
        assert_eq!(plan.args, vec!["--fsync=always"]);
        assert_eq!(plan.ports, vec![8379], "UDP ports are not proxied");
        let readiness = plan.readiness.unwrap();
        assert_eq!((readiness.path.as_str(), readiness.port), ("/readyz", 8379));
        assert_eq!(readiness.failure_threshold, 2);
        assert_eq!(plan.restart, RestartPolicy::Always);
        assert_eq!(plan.grace, Duration::from_secs(60));
        assert_eq!(plan.mounts[0].kind, VolumeKind::Claim("data-s-0".into()));
        assert_eq!(plan.mounts[1].kind, VolumeKind::EmptyDir);
        assert_eq!(plan.mounts[1].mount_path, "/tmp");
    }

    #[test]
    fn refuses_what_the_box_cannot_run() {
        let mut pod = node_pod();
        pod.spec.as_mut().unwrap().containers[0].image = Some("nginx".into());
        assert!(plan(&pod).unwrap_err().contains("runs only partita-node"));
        let mut pod = node_pod();
        pod.spec.as_mut().unwrap().containers[0].command = Some(vec!["/bin/sh".into()]);
        assert!(plan(&pod).unwrap_err().contains("/bin/sh"));
        let mut pod = node_pod();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        pod.spec.as_mut().unwrap().containers.push(c);
        assert!(plan(&pod).unwrap_err().contains("exactly one container"));
        let mut pod = node_pod();
        pod.spec.as_mut().unwrap().volumes.as_mut().unwrap()[1].empty_dir = None;
        assert!(plan(&pod).unwrap_err().contains("tmp"));
        let mut pod = node_pod();
        pod.spec.as_mut().unwrap().containers[0].command = Some(vec![
            "/usr/local/bin/partita-node".into(),
            "--standalone".into(),
        ]);
        assert_eq!(
            plan(&pod).unwrap().args,
            vec!["--standalone", "--fsync=always"]
        );
    }

    #[test]
    fn environment_from_config_map_downward_api_and_expansion() {
        let pod = node_pod();
        assert_eq!(env_sources(&pod).0, BTreeSet::from(["cfg".to_string()]));
        let mut inputs = EnvInputs {
            pod_ip: "127.1.2.3".into(),
            host_ip: "127.1.2.128".into(),
            node_name: "box".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_env(&pod, &inputs).unwrap_err(),
            "configmap \"cfg\" not found"
        );
        inputs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some(BTreeMap::from([
                    ("PARTITA_GRPC_LISTEN".into(), "0.0.0.0:7379".into()),
                    ("PARTITA_NODE_ID".into(), "overridden".into()),
                ])),
                ..Default::default()
            },
        );
        let env = resolve_env(&pod, &inputs).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PARTITA_GRPC_LISTEN"), Some("0.0.0.0:7379"));
        assert_eq!(get("PARTITA_NODE_ID"), Some("s-0"), "env overrides envFrom");
        assert_eq!(get("PARTITA_ADVERTISE_HOST"), Some("127.1.2.3"));
        assert_eq!(get("GREETING"), Some("s-0 at $(x)"));
        assert_eq!(
            env.iter().filter(|(n, _)| n == "PARTITA_NODE_ID").count(),
            1
        );
    }

    #[test]
    fn expansion_rules() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("$(A)-$(B)-$$-$", &env), "1-$(B)-$-$");
        assert_eq!(expand("x$(A", &env), "x$(A");
    }

    #[test]
    fn rewrites_listen_addresses_and_mount_paths() {
        let inner = Ipv4Addr::new(127, 1, 2, 131);
        let mounts = vec![
            (
                "/data".to_string(),
                PathBuf::from("/box/volumes/ns/data-s-0"),
            ),
            ("/data/deep".to_string(), PathBuf::from("/elsewhere")),
        ];
        assert_eq!(rewrite("0.0.0.0:7379", inner, &mounts), "127.1.2.131:7379");
        assert_eq!(rewrite("[::]:80", inner, &mounts), "127.1.2.131:80");
        assert_eq!(rewrite("/data", inner, &mounts), "/box/volumes/ns/data-s-0");
        assert_eq!(
            rewrite("/data/x", inner, &mounts),
            "/box/volumes/ns/data-s-0/x"
        );
        assert_eq!(rewrite("/data/deep/y", inner, &mounts), "/elsewhere/y");
        assert_eq!(rewrite("/database", inner, &mounts), "/database");
        assert_eq!(
            rewrite("--data-dir=/data", inner, &mounts),
            "--data-dir=/box/volumes/ns/data-s-0"
        );
        assert_eq!(rewrite("127.0.0.1:1", inner, &mounts), "127.0.0.1:1");
    }

    #[test]
    fn host_directories() {
        let root = Path::new("/r");
        let claim = Mount {
            mount_path: "/data".into(),
            volume: "data".into(),
            kind: VolumeKind::Claim("data-s-0".into()),
            sub_path: Some("sub".into()),
        };
        assert_eq!(
            host_dir(root, "ns", "s-0", "u1", &claim),
            Path::new("/r/volumes/ns/data-s-0/sub")
        );
        let tmp = Mount {
            mount_path: "/tmp".into(),
            volume: "tmp".into(),
            kind: VolumeKind::EmptyDir,
            sub_path: None,
        };
        assert_eq!(
            host_dir(root, "ns", "s-0", "u1", &tmp),
            Path::new("/r/pods/ns/s-0-u1/tmp")
        );
    }
}
