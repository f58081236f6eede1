//! Why a command could not be started in a jail (or a sandbox's jail could not be built),
//! kept typed from where it happens — a step of the jail's child, a command init could not
//! start, the spawner, a cgroup, a pipe — up to the sandbox API, where it becomes
//! [`SandboxError::Spawn`] with the message, the step's code and the OS error.

use std::io;
use std::sync::Arc;

use paddock_core::SandboxError;
use paddock_sys::jail::{SpawnError, StepFailed};
use paddock_sys::sandbox_jail::StartFailed;

use crate::jail::MAX_RUNNING;

/// Why a command could not be started in a jail. Cheap to clone (a jail being built is
/// awaited by every command that arrives meanwhile).
#[derive(Debug, Clone, thiserror::Error)]
pub enum JailError {
    /// A step of the jail's child (or of a waiting shell's preload) failed.
    #[error(transparent)]
    Step(#[from] StepFailed),
    /// The sandbox's init could not start the command.
    #[error(transparent)]
    Start(#[from] StartFailed),
    /// Preparing, cloning or releasing the jail, or encoding its command, failed in Paddock.
    #[error(transparent)]
    Spawn(Arc<SpawnError>),
    /// An OS call around the jail failed (a pipe, the control socket, `/dev/null`, the init
    /// program).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A cgroup of the sandbox or of the command could not be made (the cause is logged
    /// where it happened: it names host paths).
    #[error("could not {what}")]
    Cgroup {
        /// What could not be done (`create the sandbox's cgroup`).
        what: &'static str,
    },
    /// The jail's init did not come up in time.
    #[error("the jail was not built in time")]
    Timeout,
    /// The jail's status pipe carried something other than a setup failure.
    #[error("the jail's setup ended unexpectedly")]
    Unexpected,
    /// The sandbox's jail has ended.
    #[error("the sandbox's jail has ended")]
    Ended,
    /// Every command slot of the sandbox is taken.
    #[error("too many commands are running in this sandbox (at most {MAX_RUNNING})")]
    Busy,
    /// The command could not be sent to the sandbox's init.
    #[error("could not hand the command to the sandbox: {0}")]
    Handover(Arc<io::Error>),
    /// The spawner thread could not be started.
    #[error("could not start the spawner thread: {0}")]
    SpawnerStart(Arc<io::Error>),
    /// The spawner thread is gone or dropped the request.
    #[error("the spawner thread {0}")]
    Spawner(&'static str),
}

impl JailError {
    /// An OS error around the jail.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io {
            what,
            source: Arc::new(source),
        }
    }

    /// The stable code of the step that failed, when a step of the jail or of init's child
    /// did ([`paddock_sys::jail::Step::code`]).
    pub fn step(&self) -> Option<&'static str> {
        match self {
            Self::Step(f) => Some(f.step.code()),
            Self::Start(f) => Some(f.step.code()),
            _ => None,
        }
    }

    /// The OS error number behind the failure, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Step(f) => Some(f.errno),
            Self::Start(f) => Some(f.errno),
            Self::Spawn(e) => e.errno(),
            Self::Io { source, .. } | Self::Handover(source) | Self::SpawnerStart(source) => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

impl From<SpawnError> for JailError {
    fn from(e: SpawnError) -> Self {
        Self::Spawn(Arc::new(e))
    }
}

impl From<JailError> for SandboxError {
    fn from(e: JailError) -> Self {
        SandboxError::Spawn {
            message: e.to_string(),
            step: e.step().map(str::to_owned),
            errno: e.errno(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_sys::jail::Step;
    use paddock_sys::sandbox_jail::StartStep;

    #[test]
    fn a_failed_step_reaches_the_api_with_its_code_and_errno() {
        let e: SandboxError = JailError::from(StepFailed {
            step: Step::Cwd,
            errno: libc::ENOENT,
        })
        .into();
        assert_eq!(
            e,
            SandboxError::Spawn {
                message: format!(
                    "change to the working directory failed: {}",
                    io::Error::from_raw_os_error(libc::ENOENT)
                ),
                step: Some("change_directory".into()),
                errno: Some(libc::ENOENT),
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "could not start command: change to the working directory failed: {}",
                io::Error::from_raw_os_error(libc::ENOENT)
            )
        );
        let busy: SandboxError = JailError::from(StartFailed {
            step: StartStep::Busy,
            errno: libc::EAGAIN,
        })
        .into();
        assert_eq!(
            busy.to_string(),
            "could not start command: start a command (too many running in this sandbox)"
        );
        // Failures that are no step of a child carry no step.
        let e: SandboxError = JailError::Busy.into();
        assert_eq!(
            e,
            SandboxError::Spawn {
                message: "too many commands are running in this sandbox (at most 256)".into(),
                step: None,
                errno: None,
            }
        );
        let e = JailError::io("status pipe")(io::Error::from_raw_os_error(libc::EBADF));
        assert_eq!(e.errno(), Some(libc::EBADF));
        assert!(e.to_string().starts_with("status pipe: "), "{e}");
    }
}
