//! Watches: `GET ...?watch=true` as a stream of JSON lines (`ADDED`, `MODIFIED`,
//! `DELETED`, `BOOKMARK`, `ERROR`), replayed from the event log when resuming from a
//! `resourceVersion` (else from the current objects), then live.
//!
//! Invariant: a watch sees every later change that matches exactly once, in order; a
//! version older than the log answers one `ERROR` line with a 410 `Expired` status; a
//! watcher too slow for the event rate is cut off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::http::{Target, status};
use crate::select;
use crate::store::{Event, Sim, object_matches};

/// Answers a watch of `t` with the selectors and query parameters (`resourceVersion`,
/// `timeoutSeconds`, `allowWatchBookmarks`) given.
pub(crate) fn watch(
    sim: Arc<Sim>,
    t: Target,
    q: BTreeMap<String, String>,
    labels: Vec<select::Req>,
    fields: Vec<select::Req>,
) -> Response {
    let plural = t.kind.plural;
    let ns = t.ns.clone();
    let named = t.name.clone();
    let from: Option<u64> = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
        .and_then(|v| v.parse().ok());
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let mut live = sim.events.subscribe();
    let mut end = sim.end.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let relevant = move |ev: &Event| {
        ev.plural == plural
            && ns.as_deref().is_none_or(|n| {
                select::field(&ev.object, "metadata.namespace").as_deref() == Some(n)
            })
            && named
                .as_deref()
                .is_none_or(|n| select::field(&ev.object, "metadata.name").as_deref() == Some(n))
            && object_matches(&ev.object, &labels, &fields)
    };
    let line =
        |ty: &str, obj: &Value| Bytes::from(format!("{}\n", json!({"type": ty, "object": obj})));
    // Replay: from the log when resuming, else the current state as ADDED events.
    let (backlog, mut last) = {
        let Ok(s) = sim.state.lock() else {
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "state lock poisoned",
            );
        };
        match from {
            Some(rv) => {
                let oldest = s.log.front().map(|e| e.rv).unwrap_or(s.rv + 1);
                if rv + 1 < oldest && rv < s.rv {
                    let expired = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": format!("too old resource version: {rv} ({})", oldest - 1), "reason": "Expired", "code": 410});
                    let body = line("ERROR", &expired);
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body))
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
                let evs: Vec<Bytes> = s
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && relevant(e))
                    .map(|e| line(e.kind, &e.object))
                    .collect();
                (evs, s.rv)
            }
            None => {
                let evs: Vec<Bytes> = s
                    .objects
                    .iter()
                    .filter(|((p, _, _), v)| {
                        *p == plural
                            && relevant(&Event {
                                rv: 0,
                                plural,
                                kind: "ADDED",
                                object: (*v).clone(),
                            })
                    })
                    .map(|(_, v)| line("ADDED", v))
                    .collect();
                (evs, s.rv)
            }
        }
    };
    tokio::spawn(async move {
        for b in backlog {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = end.recv() => return,
                _ = tick.tick(), if bookmarks => {
                    let kind_s = t.kind.kind;
                    let obj = json!({"kind": kind_s, "apiVersion": t.kind.api_version, "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(line("BOOKMARK", &obj)).await.is_err() { return; }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if ev.rv <= last { continue; }
                        last = ev.rv;
                        if relevant(&ev) && tx.send(line(ev.kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    // A watcher too slow for the event rate is cut off, as the API server does.
                    Err(_) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
