//! Service addresses: a cluster IP for every Service and, for NodePort and LoadBalancer
//! Services, a NodePort in 30000-32767 (the one asked for, else a free one from a random
//! start), released when the Service is deleted.
//!
//! Invariant: a NodePort is allocated to at most one Service; in kubelet mode a port
//! another process holds on the host's loopback is never handed out.

// Handlers return ready `Response`s as their error type: they are the HTTP answer, built
// once per failed request, so boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::http::status;
use crate::store::{Kind, Sim};
use crate::validate::invalid;

/// Whether 127.0.0.1:`port` can be bound now. In kubelet mode NodePorts are served on the
/// host's loopback, so a port another process (or another simulator in the same test run)
/// already serves must not be handed out: requests would reach the wrong sandbox.
fn host_port_free(port: i64) -> bool {
    u16::try_from(port).is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// Gives the Service `obj` its cluster IP and NodePorts and fills in port defaults
/// (`targetPort`, `protocol`); 422 when a NodePort asked for is out of range or taken.
pub(crate) fn allocate_ports(
    sim: &Sim,
    kind: &Kind,
    name: &str,
    obj: &mut Value,
) -> Result<(), Response> {
    let ty = obj["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_owned();
    if obj["spec"].is_null() {
        obj["spec"] = json!({});
    }
    let Ok(mut s) = sim.state.lock() else {
        return Err(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "state lock poisoned",
        ));
    };
    let ip = s.next_ip;
    s.next_ip += 1;
    obj["spec"]["clusterIP"] = json!(format!("10.96.{}.{}", (ip >> 8) & 255, ip & 255));
    obj["spec"]["type"] = json!(ty);
    let mut taken: Vec<i64> = Vec::new();
    let ports = obj["spec"]["ports"].as_array_mut();
    let Some(ports) = ports else {
        return Err(invalid(kind, name, &["spec.ports: Required value".into()]));
    };
    for (i, p) in ports.iter_mut().enumerate() {
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if ty != "NodePort" && ty != "LoadBalancer" {
            continue;
        }
        let np = match p["nodePort"].as_i64() {
            Some(n) => {
                if !(30000..=32767).contains(&n) {
                    return Err(invalid(
                        kind,
                        name,
                        &[format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767"
                        )],
                    ));
                }
                if s.node_ports.contains(&n) || taken.contains(&n) {
                    return Err(invalid(
                        kind,
                        name,
                        &[format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is already allocated"
                        )],
                    ));
                }
                n
            }
            None => {
                let start = 30000 + (sim.roll() % 2768) as i64;
                let found = (0..2768)
                    .map(|o| 30000 + (start - 30000 + o) % 2768)
                    .find(|n| {
                        !s.node_ports.contains(n)
                            && !taken.contains(n)
                            && (!sim.opts.run_pods || host_port_free(*n))
                    });
                match found {
                    Some(n) => n,
                    None => {
                        return Err(status(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            "range of valid NodePorts is full",
                        ));
                    }
                }
            }
        };
        taken.push(np);
        p["nodePort"] = json!(np);
    }
    s.node_ports.extend(taken);
    obj["status"] = json!({"loadBalancer": {}});
    Ok(())
}

/// Frees the NodePorts of the Service `obj`.
pub(crate) fn release_ports(sim: &Sim, obj: &Value) {
    if let (Some(ports), Ok(mut s)) = (obj["spec"]["ports"].as_array(), sim.state.lock()) {
        for p in ports {
            if let Some(n) = p["nodePort"].as_i64() {
                s.node_ports.remove(&n);
            }
        }
    }
}
