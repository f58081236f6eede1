//! The conformance suite against the TEST-ONLY host sandbox, and against `RemoteSandbox`
//! over an agent serving it: checks the agent and the client where the isolated runtime
//! cannot start.

mod in_process {
    paddock_conformance::conformance_suite!(paddock_conformance::HostTarget);
}

mod over_agent {
    paddock_conformance::conformance_suite!(paddock_conformance::RemoteTarget {
        bin: std::path::PathBuf::from(env!("CARGO_BIN_EXE_paddock-host-test-agent")),
    });
}
