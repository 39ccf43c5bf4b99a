//! The two Services: a headless one that gives every pod a stable DNS name and lists pods before
//! they are ready (peers must find a node to replicate to it before it can become ready), and a
//! client Service in front of the RESP and gRPC ports.

use super::{Names, Owner, ports, selector_labels};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port: number,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

/// The headless Service the StatefulSet names as its `serviceName`.
pub fn peer_service(owner: &Owner, names: &Names) -> Service {
    Service {
        metadata: owner.meta(&names.peer_service),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&owner.name)),
            ports: Some(vec![
                port("grpc", ports::GRPC),
                port("resp", ports::RESP),
                port("http", ports::HTTP),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service: RESP and gRPC, on ready pods only.
pub fn client_service(owner: &Owner, names: &Names) -> Service {
    Service {
        metadata: owner.meta(&names.client_service),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(&owner.name)),
            ports: Some(vec![port("resp", ports::RESP), port("grpc", ports::GRPC)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
