//! Load generator for the provisioner benchmark: C concurrent clients, each repeating
//! create → get → delete of its own sandbox ids against a DeerFlow-compatible
//! provisioner, then per-operation latency percentiles and the overall rate as one JSON
//! line.
//!
//! Usage: `provisioner_load URL KEY CLIENTS ROUNDS_PER_CLIENT LABEL`

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        bail!("usage: provisioner_load URL KEY CLIENTS ROUNDS LABEL");
    }
    let (url, key, label) = (a[1].clone(), a[2].clone(), a[5].clone());
    let clients: usize = a[3].parse().context("CLIENTS")?;
    let rounds: usize = a[4].parse().context("ROUNDS")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: [Vec<Duration>; 3] = Default::default();
            let mut errors = 0usize;
            for r in 0..rounds {
                let id = format!("b{c}-{r}");
                let body = json!({"sandbox_id": id, "thread_id": format!("t{c}-{r}")});
                let ops = [
                    http.post(format!("{url}/api/sandboxes")).json(&body),
                    http.get(format!("{url}/api/sandboxes/{id}")),
                    http.delete(format!("{url}/api/sandboxes/{id}")),
                ];
                for (i, req) in ops.into_iter().enumerate() {
                    let t = Instant::now();
                    match req.header("X-API-Key", &key).send().await {
                        Ok(resp) if resp.status().is_success() => {
                            let _ = resp.bytes().await;
                            lat[i].push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all: [Vec<Duration>; 3] = Default::default();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        for (i, l) in lat.into_iter().enumerate() {
            all[i].extend(l);
        }
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    let ops: usize = all.iter().map(Vec::len).sum();
    let [mut c, mut g, mut d] = all;
    println!(
        "{}",
        json!({
            "label": label, "clients": clients, "rounds": rounds, "errors": errors,
            "wall_s": wall, "ops_per_s": ops as f64 / wall,
            "create_p50_ms": pct(&mut c, 0.5), "create_p99_ms": pct(&mut c, 0.99),
            "get_p50_ms": pct(&mut g, 0.5), "get_p99_ms": pct(&mut g, 0.99),
            "delete_p50_ms": pct(&mut d, 0.5), "delete_p99_ms": pct(&mut d, 0.99),
        })
    );
    Ok(())
}
