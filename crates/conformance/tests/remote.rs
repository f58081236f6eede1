//! The conformance suite against `RemoteSandbox` talking to a real agent process on a
//! loopback port the OS picked (the process is killed by pid when the case ends).

paddock_conformance::conformance_suite!(paddock_conformance::RemoteTarget {
    bin: std::path::PathBuf::from(env!("CARGO_BIN_EXE_paddock-conformance-agent")),
});
