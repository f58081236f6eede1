//! The conformance suite against the in-process sandbox.

paddock_conformance::conformance_suite!(paddock_conformance::LocalTarget);
