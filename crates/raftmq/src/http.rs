//! The node's HTTP API, for orchestrators and for `raftmq cluster …`:
//!
//! - `GET /health`: 200 `ok` while the process serves at all (a liveness probe);
//! - `GET /ready`: 200 `ready` once the node is a caught-up member of a cluster with a
//!   leader, else 503 `not ready` (a readiness probe: route clients elsewhere meanwhile);
//! - `GET /cluster`: the cluster status JSON from [`Control::status`];
//! - `GET /metrics`: every metric in the Prometheus text format ([`Control::metrics`]);
//! - `GET /`: the status page (`status.html`, embedded): the whole cluster, live;
//! - `GET /cluster/view`: what the page shows, the whole cluster as gathered by this
//!   node from every member (`view`);
//! - `GET /node`: this node's own figures ([`Control::node`]);
//! - `GET /events[?since=SEQ]`: the cluster events this node recorded, oldest first
//!   ([`Control::events`]);
//! - `POST /cluster/leave`, `POST /cluster/remove/{id}`: membership changes, answered
//!   `{"ok":true}` or `{"error":"…"}` with 500, or 503 while the node is not ready;
//! - `POST /cluster/snapshot`: builds a snapshot of this node's state now, answered once
//!   it is stored with what it cost (`{"builds":…,"last_build_ms":…,"last_hold_ms":…,
//!   "last_bytes":…}`); the log up to it can then be purged.
//!
//! Every POST needs `Authorization: Bearer <admin token>` (`--admin-token-file`),
//! compared in constant time: 401 without it or with another token, 403 for all when
//! the node has no token. The GETs stay open to load balancers and monitoring.
//!
//! The API knows nothing of Raft: the cluster layer implements [`Control`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A membership change in progress; boxed so that `Control` stays object-safe.
pub type Change = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// An admin action in progress that answers with a JSON body.
pub type Reply = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// What the HTTP API asks of the node.
pub trait Control: Send + Sync + 'static {
    /// The cluster status JSON (schema: `cluster::Status`).
    fn status(&self) -> Value;
    /// Member of a cluster with a known leader and caught up.
    fn is_ready(&self) -> bool;
    /// The metrics, in the Prometheus text format (`crate::metrics::CONTENT_TYPE`).
    /// May block (it reads `/proc` and walks the data directory).
    fn metrics(&self) -> String;
    /// Takes this node out of the cluster.
    fn leave(&self) -> Change;
    /// Takes node `id` out of the cluster.
    fn remove(&self, id: u64) -> Change;
    /// Builds a snapshot of this node's state now; answers with what it cost
    /// (`persistence::SnapshotFigures`) once it is stored.
    fn snapshot(&self) -> Reply;
    /// This node's own figures: id, role, readiness, clients, sessions, counters,
    /// queued messages, disk (`GET /node`).
    fn node(&self) -> Value;
    /// The events this node recorded after sequence number `since` (all it keeps with
    /// `None`), oldest first: a JSON array (`GET /events`).
    fn events(&self, since: Option<u64>) -> Value;
}

/// The status page: one file, no external resources, served as is.
const STATUS_PAGE: &str = include_str!("status.html");

type Node = State<Arc<dyn Control>>;

/// The admin token; `None` refuses every admin request.
type Token = Arc<Option<cluster::Secret>>;

/// Serves the API on `listener` until `shutdown` resolves, then lets the requests in
/// progress finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn Control>,
    token: Option<cluster::Secret>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(control, token))
        .with_graceful_shutdown(shutdown)
        .await
}

fn router(control: Arc<dyn Control>, token: Option<cluster::Secret>) -> Router {
    let admin = Router::new()
        .route("/cluster/leave", post(leave))
        .route("/cluster/remove/{id}", post(remove))
        .route("/cluster/snapshot", post(snapshot))
        .route_layer(middleware::from_fn_with_state(Arc::new(token), authorize));
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/cluster", get(status))
        .route("/metrics", get(metrics))
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/cluster/view", get(view))
        .route("/node", get(node))
        .route("/events", get(events))
        .merge(admin)
        .with_state(control)
}

/// Lets through a request bearing the admin token.
async fn authorize(State(token): State<Token>, request: Request, next: Next) -> Response {
    let Some(token) = token.as_ref() else {
        let error = "admin requests are disabled on this node: start it with \
                     --admin-token-file FILE (or RAFTMQ_ADMIN_TOKEN)";
        return (StatusCode::FORBIDDEN, Json(json!({ "error": error }))).into_response();
    };
    let sent = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match sent {
        Some(sent) if token.matches(sent) => next.run(request).await,
        _ => {
            let error = "missing or wrong admin token (Authorization: Bearer ...)";
            let mut response =
                (StatusCode::UNAUTHORIZED, Json(json!({ "error": error }))).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

async fn ready(State(control): Node) -> (StatusCode, &'static str) {
    if control.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn status(State(control): Node) -> Json<Value> {
    Json(control.status())
}

async fn metrics(State(control): Node) -> Response {
    match tokio::task::spawn_blocking(move || control.metrics()).await {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn view(State(control): Node) -> Json<Value> {
    Json(crate::view::gather(control).await)
}

async fn node(State(control): Node) -> Json<Value> {
    Json(control.node())
}

/// `?since=SEQ` (or nothing): 400 for anything else.
async fn events(State(control): Node, RawQuery(query): RawQuery) -> Response {
    let since = match query.as_deref().filter(|q| !q.is_empty()) {
        None => None,
        Some(q) => match q.strip_prefix("since=").map(str::parse::<u64>) {
            Some(Ok(seq)) => Some(seq),
            _ => {
                let error = "expected ?since=SEQ, a sequence number from an earlier answer";
                return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
            }
        },
    };
    Json(control.events(since)).into_response()
}

async fn leave(State(control): Node) -> Response {
    let result = control.leave().await;
    outcome(&*control, result)
}

async fn remove(State(control): Node, Path(id): Path<u64>) -> Response {
    let result = control.remove(id).await;
    outcome(&*control, result)
}

async fn snapshot(State(control): Node) -> Response {
    match control.snapshot().await {
        Ok(figures) => Json(figures).into_response(),
        Err(error) => outcome(&*control, Err(error)),
    }
}

/// A failure while the node has no leader or lags is likely to pass: 503 tells the
/// caller to retry (or ask another node); any other failure is a plain 500.
fn outcome(control: &dyn Control, result: Result<(), String>) -> Response {
    match result {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(error) => {
            let status = if control.is_ready() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, Json(json!({ "error": error }))).into_response()
        }
    }
}

/// A scripted `Control` and a server running it on its own thread, for the tests of this
/// module and of `ctl`.
#[cfg(test)]
pub(crate) mod fake {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    use serde_json::{json, Value};
    use tokio::sync::oneshot;

    use super::{Change, Control, Reply};

    /// The admin token of [`Server::start`].
    pub const TOKEN: &str = "fake-admin-token-0123456789";

    /// Node 1 of a cluster of 1 (leader) and 2 (learner); node 2 can be removed, others
    /// not; `leave` fails while `leave_error` is set.
    #[derive(Default)]
    pub struct FakeControl {
        pub ready: AtomicBool,
        pub leave_error: Mutex<Option<String>>,
        /// Every membership call, in order: "leave" or "remove N".
        pub calls: Mutex<Vec<String>>,
        /// Node 2's HTTP address, when not the default 127.0.0.2:8080.
        pub http_of_2: Mutex<Option<String>>,
    }

    impl Control for FakeControl {
        fn status(&self) -> Value {
            let http_of_2 = self.http_of_2.lock().unwrap().clone();
            json!({
                "node_id": 1, "role": "leader", "leader": 1, "term": 3,
                "commit_index": 10, "applied_index": 10, "last_log_index": 10,
                "ready": self.is_ready(),
                "nodes": [
                    {"id": 1, "voter": true, "cluster_addr": "127.0.0.1:7000",
                     "mqtt_addr": "127.0.0.1:1883", "http_addr": "127.0.0.1:8080"},
                    {"id": 2, "voter": false, "cluster_addr": "127.0.0.2:7000",
                     "mqtt_addr": "127.0.0.2:1883",
                     "http_addr": http_of_2.as_deref().unwrap_or("127.0.0.2:8080")},
                ],
                "down": [],
            })
        }

        fn node(&self) -> Value {
            json!({"id": 1, "role": "leader", "ready": self.is_ready(),
                   "stats": {"clients_connected": 2, "publish_received": 10}})
        }

        /// Three events; the second, a leader change, every node of a cluster of fakes
        /// has alike.
        fn events(&self, since: Option<u64>) -> Value {
            let all = [
                json!({"seq": 1, "at_ms": 1000, "seen_by": 1, "kind": "node_started"}),
                json!({"seq": 2, "at_ms": 2000, "seen_by": 1, "kind": "leader_changed",
                       "from": null, "to": 1, "term": 3}),
                json!({"seq": 3, "at_ms": 3000, "seen_by": 1, "kind": "node_down", "node": 2}),
            ];
            let after = since.unwrap_or(0);
            Value::Array(
                all.into_iter()
                    .filter(|e| e["seq"].as_u64() > Some(after))
                    .collect(),
            )
        }

        fn is_ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }

        fn metrics(&self) -> String {
            "# HELP raftmq_raft_term The Raft term.\n# TYPE raftmq_raft_term gauge\n\
             raftmq_raft_term 3\n"
                .into()
        }

        fn leave(&self) -> Change {
            self.calls.lock().unwrap().push("leave".into());
            let result = match self.leave_error.lock().unwrap().clone() {
                Some(error) => Err(error),
                None => Ok(()),
            };
            Box::pin(async move { result })
        }

        fn snapshot(&self) -> Reply {
            self.calls.lock().unwrap().push("snapshot".into());
            Box::pin(async {
                Ok(
                    json!({"builds": 1, "last_build_ms": 12.5, "last_hold_ms": 3.0,
                          "last_bytes": 4096}),
                )
            })
        }

        fn remove(&self, id: u64) -> Change {
            self.calls.lock().unwrap().push(format!("remove {id}"));
            Box::pin(async move {
                match id {
                    2 => Ok(()),
                    _ => Err(format!("node {id} is not a member")),
                }
            })
        }
    }

    /// The API on 127.0.0.1, served by a runtime of its own so that tests can use a
    /// blocking client; dropping it shuts the server down and waits for it.
    pub struct Server {
        pub addr: SocketAddr,
        pub control: Arc<FakeControl>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<JoinHandle<std::io::Result<()>>>,
    }

    impl Server {
        /// A server whose admin token is [`TOKEN`].
        pub fn start() -> Server {
            Server::with_token(Some(TOKEN))
        }

        pub fn with_token(token: Option<&str>) -> Server {
            let token = token.map(|t| cluster::Secret::new(t).unwrap());
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let addr = listener.local_addr().unwrap();
            let control = Arc::new(FakeControl::default());
            control.ready.store(true, Ordering::SeqCst);
            let (stop, stopped) = oneshot::channel::<()>();
            let served = control.clone();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let shutdown = async move {
                        let _ = stopped.await;
                    };
                    super::serve(listener, served, token, shutdown).await
                })
            });
            Server {
                addr,
                control,
                stop: Some(stop),
                thread: Some(thread),
            }
        }

        /// Stops the server and returns what `serve` returned.
        pub fn stop(mut self) -> std::io::Result<()> {
            self.shut_down()
        }

        fn shut_down(&mut self) -> std::io::Result<()> {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            match self.thread.take() {
                Some(thread) => thread.join().expect("server thread panicked"),
                None => Ok(()),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.shut_down();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::fake::{Server, TOKEN};
    use serde_json::Value;

    /// Status and body of one request, POSTs with the admin token; non-2xx answers are
    /// answers here, not errors.
    fn request(server: &Server, method: &str, path: &str) -> (u16, String) {
        request_as(server, method, path, Some(TOKEN))
    }

    fn request_as(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let url = format!("http://{}{path}", server.addr);
        let response = match method {
            "GET" => agent.get(&url).call(),
            "POST" => match token {
                Some(t) => agent
                    .post(&url)
                    .header("Authorization", format!("Bearer {t}"))
                    .send_empty(),
                None => agent.post(&url).send_empty(),
            },
            _ => unreachable!(),
        };
        let mut response = response.unwrap();
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), body)
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[test]
    fn health_answers_ok_even_when_not_ready() {
        let server = Server::start();
        server.control.ready.store(false, Ordering::SeqCst);
        assert_eq!(request(&server, "GET", "/health"), (200, "ok".into()));
    }

    #[test]
    fn ready_follows_the_node() {
        let server = Server::start();
        assert_eq!(request(&server, "GET", "/ready"), (200, "ready".into()));
        server.control.ready.store(false, Ordering::SeqCst);
        assert_eq!(request(&server, "GET", "/ready"), (503, "not ready".into()));
    }

    #[test]
    fn cluster_serves_the_status_json() {
        let server = Server::start();
        let (status, body) = request(&server, "GET", "/cluster");
        assert_eq!(status, 200);
        let value = json(&body);
        assert_eq!(value["node_id"], 1);
        assert_eq!(value["nodes"][1]["cluster_addr"], "127.0.0.2:7000");
    }

    #[test]
    fn metrics_are_served_as_prometheus_text() {
        let server = Server::start();
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
        let url = format!("http://{}/metrics", server.addr);
        let mut response = agent.get(&url).call().unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let body = response.body_mut().read_to_string().unwrap();
        assert!(body.ends_with("raftmq_raft_term 3\n"), "{body}");
    }

    #[test]
    fn leave_reports_success_and_failure() {
        let server = Server::start();
        let (status, body) = request(&server, "POST", "/cluster/leave");
        assert_eq!(
            (status, json(&body)),
            (200, serde_json::json!({"ok": true}))
        );

        *server.control.leave_error.lock().unwrap() = Some("no quorum".into());
        let (status, body) = request(&server, "POST", "/cluster/leave");
        assert_eq!(status, 500);
        assert_eq!(json(&body)["error"], "no quorum");

        server.control.ready.store(false, Ordering::SeqCst);
        let (status, _) = request(&server, "POST", "/cluster/leave");
        assert_eq!(status, 503, "a node that is not ready says: retry");
        assert_eq!(server.control.calls.lock().unwrap().len(), 3);
    }

    #[test]
    fn remove_passes_the_id() {
        let server = Server::start();
        let (status, body) = request(&server, "POST", "/cluster/remove/2");
        assert_eq!(
            (status, json(&body)["ok"].clone()),
            (200, Value::Bool(true))
        );
        let (status, body) = request(&server, "POST", "/cluster/remove/9");
        assert_eq!(status, 500);
        assert_eq!(json(&body)["error"], "node 9 is not a member");
        assert_eq!(
            *server.control.calls.lock().unwrap(),
            ["remove 2", "remove 9"]
        );
    }

    #[test]
    fn wrong_paths_and_methods_are_refused() {
        let server = Server::start();
        assert_eq!(request(&server, "GET", "/nope").0, 404);
        assert_eq!(request(&server, "POST", "/cluster/remove/x").0, 400);
        // The token is checked first, whatever the method.
        assert_eq!(request(&server, "GET", "/cluster/leave").0, 401);
        assert!(server.control.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn admin_requests_need_the_token() {
        let server = Server::start();
        for path in ["/cluster/leave", "/cluster/remove/2"] {
            for token in [None, Some("fake-admin-token-012345678X"), Some("")] {
                let (status, body) = request_as(&server, "POST", path, token);
                assert_eq!(status, 401, "{path} with {token:?}: {body}");
                assert!(json(&body)["error"]
                    .as_str()
                    .unwrap()
                    .contains("admin token"));
            }
        }
        assert!(server.control.calls.lock().unwrap().is_empty());
        assert_eq!(
            request(&server, "GET", "/cluster").0,
            200,
            "reads stay open"
        );
        assert_eq!(request_as(&server, "GET", "/ready", None).0, 200);
    }

    #[test]
    fn without_a_token_admin_requests_are_forbidden() {
        let server = Server::with_token(None);
        let (status, body) = request(&server, "POST", "/cluster/remove/2");
        assert_eq!(status, 403);
        assert!(body.contains("--admin-token-file"), "{body}");
        assert!(server.control.calls.lock().unwrap().is_empty());
        assert_eq!(request(&server, "GET", "/health").0, 200);
    }

    #[test]
    fn the_status_page_is_one_self_contained_file() {
        let server = Server::start();
        let (status, body) = request(&server, "GET", "/");
        assert_eq!(status, 200);
        assert!(body.starts_with("<!doctype html>"), "{}", &body[..40]);
        assert!(body.contains("/cluster/view"));
        for external in ["http://", "https://", "src=\"//"] {
            assert!(
                !body.contains(external),
                "the page loads nothing from {external}"
            );
        }
    }

    #[test]
    fn node_and_events_serve_the_nodes_own_records() {
        let server = Server::start();
        let (status, body) = request(&server, "GET", "/node");
        assert_eq!(
            (status, json(&body)["role"].clone()),
            (200, "leader".into())
        );
        let seqs = |path: &str| {
            let (status, body) = request(&server, "GET", path);
            assert_eq!(status, 200, "{path}: {body}");
            let events = json(&body);
            let seqs: Vec<u64> = events
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap())
                .collect();
            seqs
        };
        assert_eq!(seqs("/events"), [1, 2, 3]);
        assert_eq!(seqs("/events?since=1"), [2, 3]);
        assert_eq!(seqs("/events?since=3"), Vec::<u64>::new());
        for bad in ["/events?since=x", "/events?after=1", "/events?since=-1"] {
            assert_eq!(request(&server, "GET", bad).0, 400, "{bad}");
        }
    }

    #[test]
    fn the_view_marks_unreachable_members_down() {
        let (a, b) = (Server::start(), Server::start());
        *a.control.http_of_2.lock().unwrap() = Some(b.addr.to_string());
        let view = |server: &Server| json(&request(server, "GET", "/cluster/view").1);
        let v = view(&a);
        assert_eq!(v["served_by"], 1);
        assert_eq!(
            (v["leader"].clone(), v["term"].clone()),
            (1.into(), 3.into())
        );
        let states: Vec<&str> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["up", "up"], "{v}");
        assert_eq!(v["nodes"][1]["node"]["stats"]["clients_connected"], 2);
        // Both fakes saw the same leader change: once in the merged timeline.
        let kinds: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "node_started",
                "node_started",
                "leader_changed",
                "node_down",
                "node_down"
            ]
        );

        b.stop().unwrap();
        let v = view(&a);
        let two = &v["nodes"][1];
        assert_eq!(
            (two["id"].clone(), two["state"].clone()),
            (2.into(), "down".into()),
            "{v}"
        );
        assert_eq!(two["reachable"], false);
        assert!(two["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert_eq!(v["nodes"][0]["state"], "up");
    }

    #[test]
    fn serve_returns_after_shutdown() {
        let server = Server::start();
        assert_eq!(request(&server, "GET", "/health").0, 200);
        server.stop().unwrap();
    }
}
