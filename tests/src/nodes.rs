//! Fake GPU nodes: Node objects that kwok plays kubelet for.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

/// The annotation kwok is started to manage (`--manage-nodes-with-annotation-selector`).
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// The extended resource GPUs are counted in.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// What a fake GPU node looks like. Addresses are only data: nothing listens on them.
#[derive(Clone, Debug)]
pub struct GpuNode {
    pub name: String,
    pub gpus: u32,
    /// The InternalIP address (also the pod IP of host-network pods under kwok).
    pub internal_ip: IpAddr,
    /// The ExternalIP address, if the node has one.
    pub external_ip: Option<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

impl GpuNode {
    /// A node with `gpus` GPUs, InternalIP 127.0.0.1 and no ExternalIP.
    pub fn new(name: &str, gpus: u32) -> Self {
        Self {
            name: name.to_owned(),
            gpus,
            internal_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            external_ip: None,
            labels: BTreeMap::new(),
        }
    }

    pub fn external_ip(mut self, ip: IpAddr) -> Self {
        self.external_ip = Some(ip);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The Node object, status included (kwok keeps the capacity and addresses it finds).
    pub fn to_node(&self) -> Result<Node, serde_json::Error> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), self.name.clone()),
            ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ("kubernetes.io/arch".to_owned(), "amd64".to_owned()),
            ("type".to_owned(), "kwok".to_owned()),
        ]);
        if self.gpus > 0 {
            labels.insert("nvidia.com/gpu.present".to_owned(), "true".to_owned());
        }
        labels.extend(self.labels.clone());
        let mut addresses =
            vec![json!({"type": "InternalIP", "address": self.internal_ip.to_string()})];
        if let Some(ip) = self.external_ip {
            addresses.push(json!({"type": "ExternalIP", "address": ip.to_string()}));
        }
        addresses.push(json!({"type": "Hostname", "address": self.name}));
        let resources = json!({
            "cpu": "32",
            "memory": "256Gi",
            "ephemeral-storage": "1Ti",
            "pods": "110",
            GPU_RESOURCE: self.gpus.to_string(),
        });
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": labels,
                "annotations": {KWOK_NODE_ANNOTATION.0: KWOK_NODE_ANNOTATION.1, "node.alpha.kubernetes.io/ttl": "0"},
            },
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": addresses,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_advertises_gpus_and_both_addresses_and_is_kwok_managed() {
        let node = GpuNode::new("gpu-a", 2)
            .external_ip("127.0.0.2".parse().unwrap())
            .label("zone", "z1")
            .to_node()
            .unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.capacity.unwrap()[GPU_RESOURCE].0, "2");
        assert_eq!(status.allocatable.unwrap()[GPU_RESOURCE].0, "2");
        let addrs: Vec<_> = status
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert!(addrs.contains(&("InternalIP".into(), "127.0.0.1".into())));
        assert!(addrs.contains(&("ExternalIP".into(), "127.0.0.2".into())));
        let meta = node.metadata;
        assert_eq!(
            meta.annotations.unwrap()[KWOK_NODE_ANNOTATION.0],
            KWOK_NODE_ANNOTATION.1
        );
        let labels = meta.labels.unwrap();
        assert_eq!(labels["zone"], "z1");
        assert_eq!(labels["kubernetes.io/hostname"], "gpu-a");
    }

    #[test]
    fn node_without_external_ip_has_only_internal_and_hostname() {
        let node = GpuNode::new("cpu-only", 0).to_node().unwrap();
        let types: Vec<_> = node
            .status
            .unwrap()
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| a.type_)
            .collect();
        assert_eq!(types, ["InternalIP", "Hostname"]);
        assert!(
            !node
                .metadata
                .labels
                .unwrap()
                .contains_key("nvidia.com/gpu.present")
        );
    }
}
