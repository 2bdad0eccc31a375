//! A server with a VM-like handler and clients talking to it over a real
//! Unix socket: routes, errors, bad input, concurrency, lifecycle.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::events::{Cause, Event, EventKind};
use api::routes::{
    EVENTS, PING, VERSION, VM, VM_MIGRATE, VM_PAUSE, VM_RESUME, VM_SHUTDOWN, VM_SNAPSHOT,
};
use api::types::{
    GuestCounters, MigrateRequest, Ping, SnapshotRequest, SnapshotResponse, VersionInfo, VmStatus,
    vm_state,
};
use api::{Client, ClientError, Request, Response, Route, Server, ServerError};
use serde_json::{Value, json};
use testkit::TempDir;

/// A socket path nobody uses, in a directory removed after the test.
fn socket(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new("api");
    let p = dir.join(format!("{name}.sock"));
    (dir, p)
}

/// A handler that behaves like a VMM's: state changes and JSON bodies.
fn vm_handler() -> impl Fn(Request) -> Response + Send + Sync + 'static {
    let state = Arc::new(Mutex::new(vm_state::RUNNING.to_string()));
    move |req: Request| {
        let route = match Route::resolve(&req) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let mut st = state.lock().unwrap();
        match route {
            Route::Status => Response::ok(&VmStatus {
                state: st.clone(),
                memory_bytes: 1 << 30,
                vcpus: 2,
                kernel: "dirtier".into(),
                cmdline: "rate=1000".into(),
                guest: Some(GuestCounters {
                    workload: "dirtier".into(),
                    heartbeat_seq: 42,
                    verify_passes: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Route::Pause | Route::Resume => {
                let (from, to) = if route == Route::Pause {
                    (vm_state::RUNNING, vm_state::PAUSED)
                } else {
                    (vm_state::PAUSED, vm_state::RUNNING)
                };
                if *st != from {
                    return Response::error(409, format!("the VM is {}, not {from}", *st));
                }
                *st = to.to_string();
                Response::no_content()
            }
            Route::Snapshot => match req.json::<SnapshotRequest>() {
                // Echo the path length so concurrent callers can check they got their own answer.
                Ok(r) => Response::ok(&SnapshotResponse {
                    bytes: r.path.len() as u64,
                    pages: 1,
                    zero_pages: 2,
                    duration_ms: 3,
                }),
                Err(resp) => resp,
            },
            Route::Migrate => match req.json::<MigrateRequest>() {
                Ok(r) => Response::ok(&json!({"started": r.to, "strategy": r.strategy})),
                Err(resp) => resp,
            },
            Route::MigrateProgress => Response::ok(&json!({"round": 3, "remaining_bytes": 4096})),
            Route::MigrateCancel | Route::MigratePostcopy => {
                Response::error(409, "no migration is running")
            }
            Route::Shutdown => Response::no_content(),
            Route::Ping => Response::ok(&Ping {
                pid: std::process::id(),
                vm: "test-vm".into(),
            }),
            Route::Version => Response::ok(&VersionInfo {
                version: "1.2.3".into(),
                ..Default::default()
            }),
            Route::Events => Response::stream((1..=3).map(|seq| {
                serde_json::to_value(Event {
                    seq,
                    unix_ms: 0,
                    vm: "test-vm".into(),
                    kind: EventKind::VmPaused {
                        cause: Cause::Operator,
                    },
                })
                .unwrap()
            })),
        }
    }
}

/// Sends raw bytes and returns the raw response.
fn raw(path: &PathBuf, request: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn status_pause_resume() {
    let (_dir, path) = socket("flow");
    let server = Server::bind(&path, vm_handler()).unwrap();
    let client = Client::new(&path);

    let (status, body) = client.get(VM).unwrap();
    assert_eq!(status, 200);
    let vm: VmStatus = serde_json::from_value(body).unwrap();
    assert_eq!(vm.state, "running");
    assert_eq!(vm.guest.unwrap().heartbeat_seq, 42);

    assert_eq!(client.put(VM_PAUSE, None).unwrap(), (204, Value::Null));
    assert_eq!(client.get_ok(VM).unwrap()["state"], "paused");
    let (status, body) = client.put(VM_PAUSE, None).unwrap();
    assert_eq!(status, 409);
    assert_eq!(body, json!({"error": "the VM is paused, not running"}));
    let err = client.put_ok(VM_PAUSE, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "PUT /api/v1/vm.pause failed (HTTP 409): the VM is paused, not running"
    );
    client.put_ok(VM_RESUME, None).unwrap();
    assert_eq!(client.get_ok(VM).unwrap()["state"], "running");

    let body = client
        .put_ok(
            VM_MIGRATE,
            Some(&json!({"to": "127.0.0.1:7000", "strategy": "xen"})),
        )
        .unwrap();
    assert_eq!(
        body,
        json!({"started": "127.0.0.1:7000", "strategy": "xen"})
    );
    assert_eq!(client.get_ok(VM_MIGRATE).unwrap()["round"], 3);
    assert_eq!(client.put(VM_SHUTDOWN, None).unwrap().0, 204);
    server.shutdown();
}

#[test]
fn unknown_route_is_404_and_wrong_method_405() {
    let (_dir, path) = socket("routes");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let client = Client::new(&path);

    let (status, body) = client.get("/api/v1/vm.teleport").unwrap();
    assert_eq!(status, 404);
    assert_eq!(
        body["error"],
        "unknown API endpoint GET /api/v1/vm.teleport"
    );

    let (status, body) = client.put(VM, None).unwrap();
    assert_eq!(status, 405);
    assert_eq!(
        body["error"],
        "method PUT not allowed on /api/v1/vm (use GET)"
    );
    let (status, _) = client.request("DELETE", VM_MIGRATE, None).unwrap();
    assert_eq!(status, 405);

    // A 405 says what is allowed, in the Allow header too.
    let reply = raw(
        &path,
        b"DELETE /api/v1/vm.migrate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    assert!(reply.contains("Allow: PUT, GET\r\n"), "{reply}");
    let reply = raw(
        &path,
        b"PUT /api/v1/ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.contains("Allow: GET\r\n"), "{reply}");
    let reply = raw(
        &path,
        b"GET /api/v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 404") && !reply.contains("Allow:"),
        "{reply}"
    );

    // Query strings do not change the route.
    assert_eq!(client.get("/api/v1/vm?verbose=1").unwrap().0, 200);
}

#[test]
fn bad_json_is_400() {
    let (_dir, path) = socket("json");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let client = Client::new(&path);

    let (status, body) = client.put(VM_SNAPSHOT, None).unwrap();
    assert_eq!(status, 400);
    assert_eq!(body["error"], "/api/v1/vm.snapshot needs a JSON body");

    let (status, body) = client
        .put(VM_SNAPSHOT, Some(&json!({"file": "/x"})))
        .unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `file`"),
        "{body}"
    );

    let reply = raw(
        &path,
        b"PUT /api/v1/vm.snapshot HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 8\r\n\r\n{\"path\":",
    );
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        reply.contains("invalid JSON body for /api/v1/vm.snapshot"),
        "{reply}"
    );
    assert!(reply.contains("application/json"), "{reply}");
}

#[test]
fn bad_http_is_refused_and_the_server_keeps_serving() {
    let (_dir, path) = socket("http");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let reply = raw(&path, b"THIS IS NOT HTTP\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    let reply = raw(&path, &[0xff; 300]);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 4"),
        "{reply:?}"
    );
    // A client that connects and leaves.
    drop(UnixStream::connect(&path).unwrap());
    assert_eq!(Client::new(&path).get(VM).unwrap().0, 200);
}

#[test]
fn oversized_body_is_413() {
    let (_dir, path) = socket("big");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let big = json!({"path": "x".repeat(api::MAX_REQUEST_BODY)});
    match Client::new(&path).put(VM_SNAPSHOT, Some(&big)) {
        Ok((status, body)) => {
            assert_eq!(status, 413);
            assert!(body["error"].as_str().unwrap().contains("larger than"));
        }
        // The server may close before reading the whole body; the client
        // then sees the connection drop, which is also a refusal.
        Err(ClientError::Io { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    assert_eq!(Client::new(&path).get(VM).unwrap().0, 200);
}

#[test]
fn concurrent_requests_get_their_own_answers() {
    let (_dir, path) = socket("concurrent");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let client = Client::new(&path);
            std::thread::spawn(move || {
                for i in 0..25 {
                    let p = "p".repeat(t * 25 + i + 1);
                    let body = client
                        .put_ok(VM_SNAPSHOT, Some(&json!({ "path": p })))
                        .unwrap();
                    let resp: SnapshotResponse = serde_json::from_value(body).unwrap();
                    assert_eq!(resp.bytes, p.len() as u64);
                    assert_eq!(client.get(VM).unwrap().0, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn slow_handlers_do_not_block_others_and_clients_time_out() {
    let (_dir, path) = socket("slow");
    let gate = Arc::new(Mutex::new(()));
    let held = gate.lock().unwrap();
    let g = gate.clone();
    let _server = Server::bind(&path, move |req: Request| {
        if req.path == "/slow" {
            drop(g.lock().unwrap()); // waits until the test releases the gate
        }
        Response::ok(&json!({"path": req.path}))
    })
    .unwrap();
    let client = Client::new(&path).with_timeout(Duration::from_millis(200));
    let err = client.get("/slow").unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    // Another worker still answers while one is stuck.
    assert_eq!(client.get_ok("/fast").unwrap()["path"], "/fast");
    drop(held);
}

#[test]
fn handler_panic_is_500() {
    let (_dir, path) = socket("panic");
    let _server = Server::bind(&path, |req: Request| {
        if req.path == "/boom" {
            panic!("boom");
        }
        Response::no_content()
    })
    .unwrap();
    let client = Client::new(&path);
    let (status, body) = client.put("/boom", None).unwrap();
    assert_eq!(status, 500);
    assert_eq!(
        body["error"],
        "internal error: the request handler panicked"
    );
    assert_eq!(client.put("/fine", None).unwrap().0, 204);
}

#[test]
fn bind_refuses_live_server_and_replaces_stale_socket() {
    let (_dir, path) = socket("bind");
    let server = Server::bind(&path, vm_handler()).unwrap();
    assert_eq!(server.path(), path.as_path());
    match Server::bind(&path, vm_handler()) {
        Err(e @ ServerError::AlreadyRunning(_)) => {
            assert!(e.to_string().contains("already listening"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // The first server is unharmed.
    assert_eq!(Client::new(&path).get(VM).unwrap().0, 200);
    server.shutdown();
    assert!(!path.exists(), "shutdown leaves the socket file");

    // A socket file nobody listens on (a crashed server) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = Server::bind(&path, vm_handler()).unwrap();
    assert_eq!(Client::new(&path).get(VM).unwrap().0, 200);
    drop(server);
    assert!(!path.exists(), "drop leaves the socket file");

    // A regular file is never deleted.
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        Server::bind(&path, vm_handler()),
        Err(ServerError::NotASocket(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn client_errors_say_what_is_wrong() {
    let (_dir, path) = socket("missing");
    let err = Client::new(&path).get(VM).unwrap_err();
    let p = path.display();
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {p}: no such file (is `ferry run --api {p}` running?)")
    );

    let listener = UnixListener::bind(&path).unwrap();
    drop(listener);
    let err = Client::new(&path).get(VM).unwrap_err();
    assert!(err.to_string().contains("connection refused"), "{err}");
    std::fs::remove_file(&path).unwrap();

    // A peer that answers garbage.
    let listener = UnixListener::bind(&path).unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        s.write_all(b"SMTP ready\r\n\r\n").unwrap();
    });
    let err = Client::new(&path).get(VM).unwrap_err();
    assert!(matches!(err, ClientError::BadResponse { .. }), "{err}");
    peer.join().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn ping_and_version_answer() {
    let (_dir, path) = socket("ping");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let client = Client::new(&path);
    let ping: Ping = serde_json::from_value(client.get_ok(PING).unwrap()).unwrap();
    assert_eq!(ping.pid, std::process::id());
    assert_eq!(ping.vm, "test-vm");
    let v: VersionInfo = serde_json::from_value(client.get_ok(VERSION).unwrap()).unwrap();
    assert_eq!(v.version, "1.2.3");
}

#[test]
fn events_stream_as_json_lines_until_the_source_ends() {
    let (_dir, path) = socket("events");
    let _server = Server::bind(&path, vm_handler()).unwrap();
    let client = Client::new(&path);
    let events: Vec<Event> = client
        .stream(EVENTS)
        .unwrap()
        .map(|line| serde_json::from_value(line.unwrap()).unwrap())
        .collect();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events[0].kind.name(), "vm-paused");

    let reply = raw(
        &path,
        b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("application/x-ndjson"), "{reply}");
    assert_eq!(reply.split("\r\n\r\n").nth(1).unwrap().lines().count(), 3);

    // A stream of an error status is an error.
    let err = client.stream("/api/v1/nothing").unwrap_err();
    assert!(
        matches!(err, ClientError::Status { status: 404, .. }),
        "{err}"
    );
}

#[test]
fn streams_are_sent_as_they_come_and_bounded_in_number() {
    let (_dir, path) = socket("streams");
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let rx = Arc::new(Mutex::new(Some(rx)));
    let _server = Server::bind(&path, move |req: Request| {
        if req.path == "/one" {
            // The first follower gets the test's values; others wait forever.
            return match rx.lock().unwrap().take() {
                Some(rx) => Response::stream(rx.into_iter().map(|n| json!({ "n": n }))),
                None => Response::stream(std::iter::repeat_with(|| {
                    std::thread::sleep(Duration::from_secs(3600));
                    Value::Null
                })),
            };
        }
        Response::ok(&json!({}))
    })
    .unwrap();
    let client = Client::new(&path);
    let mut lines = client.stream("/one").unwrap();
    // Each value arrives on its own, before the stream ends.
    for n in 0..3 {
        tx.send(n).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), json!({ "n": n }));
    }
    drop(tx);
    assert!(lines.next().is_none());

    let mut held: Vec<_> = (0..api::MAX_STREAMS)
        .map(|_| client.stream("/one").unwrap())
        .collect();
    match client.stream("/one") {
        Err(ClientError::Status { status: 503, .. }) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("more streams than MAX_STREAMS were served"),
    }
    // Plain requests are still served while every stream slot is taken.
    assert_eq!(client.get("/fast").unwrap().0, 200);
    held.clear();
}

#[test]
fn wait_ready_waits_for_a_server_that_comes_later() {
    let (_dir, path) = socket("later");
    let p = path.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        Server::bind(&p, vm_handler()).unwrap()
    });
    Client::new(&path)
        .wait_ready(Duration::from_secs(30))
        .unwrap();
    let _server = starter.join().unwrap();

    let (_dir2, never) = socket("never");
    let err = Client::new(&never)
        .wait_ready(Duration::from_millis(200))
        .unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}

#[test]
fn a_file_that_is_not_a_socket_is_named_so() {
    let (dir, _) = socket("file");
    let file = dir.join("regular");
    std::fs::write(&file, b"not a socket").unwrap();
    let client = Client::new(&file);
    let err = client.get(VM).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert!(!err.to_string().contains("stale"), "{err}");
    // Waiting does not help: it says so at once.
    let err = client.wait_ready(Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
}
