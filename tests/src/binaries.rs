//! Where the pinned third-party binaries live: built once per machine by
//! `tests/bin/install-test-binaries.sh` into `$P2PCAMERA_CACHE/bin/<name>-<version>/`.

use std::path::{Path, PathBuf};

use crate::Error;

pub const KUBERNETES_VERSION: &str = "v1.36.3";
pub const ETCD_VERSION: &str = "v3.6.16";
pub const KWOK_VERSION: &str = "v0.8.0";

/// The command that builds the binaries, for error messages.
pub const INSTALL_COMMAND: &str = "tests/bin/install-test-binaries.sh";

/// `$P2PCAMERA_CACHE`, else `~/.cache/p2pcamera`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("P2PCAMERA_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("p2pcamera")
}

/// One built package (`k8s-v1.36.3`, `etcd-v3.6.16`, ...): a directory with a `.complete` marker.
fn package_dir(name: &str, version: &str, target: &str) -> Result<PathBuf, Error> {
    let dir = cache_dir().join("bin").join(format!("{name}-{version}"));
    if dir.join(".complete").is_file() {
        Ok(dir)
    } else {
        Err(Error::MissingBinaries {
            dir,
            command: format!("{INSTALL_COMMAND} {target}"),
        })
    }
}

fn binary(dir: &Path, name: &str, target: &str) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinaries {
            dir: path,
            command: format!("{INSTALL_COMMAND} {target}"),
        })
    }
}

/// Paths of the binaries a control plane runs.
#[derive(Clone, Debug)]
pub struct ControlPlaneBinaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub kwok: PathBuf,
    /// kwok's default node and pod stages, taken from the pinned kwok module.
    pub kwok_stages: PathBuf,
}

impl ControlPlaneBinaries {
    /// Finds every binary or fails naming the install command.
    pub fn locate() -> Result<Self, Error> {
        let k8s = package_dir("k8s", KUBERNETES_VERSION, "k8s")?;
        let etcd = package_dir("etcd", ETCD_VERSION, "etcd")?;
        let kwok = package_dir("kwok", KWOK_VERSION, "kwok")?;
        let kwok_stages = kwok.join("stages");
        if !kwok_stages.is_dir() {
            return Err(Error::MissingBinaries {
                dir: kwok_stages,
                command: format!("{INSTALL_COMMAND} kwok"),
            });
        }
        Ok(Self {
            etcd: binary(&etcd, "etcd", "etcd")?,
            kube_apiserver: binary(&k8s, "kube-apiserver", "k8s")?,
            kube_scheduler: binary(&k8s, "kube-scheduler", "k8s")?,
            kube_controller_manager: binary(&k8s, "kube-controller-manager", "k8s")?,
            kubectl: binary(&k8s, "kubectl", "k8s")?,
            kwok: binary(&kwok, "kwok", "kwok")?,
            kwok_stages,
        })
    }
}
