//! A [`Runner`] that records the commands and answers from a table.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Output, RunError, Runner};

#[derive(Default)]
pub struct FakeRunner {
    /// Every command line run, in order.
    pub calls: Mutex<Vec<String>>,
    /// What was written to stdin, per run that had any.
    pub scripts: Mutex<Vec<String>>,
    /// Answers by command line; anything else succeeds with no output.
    pub replies: Mutex<HashMap<String, Output>>,
    /// Programs that are not installed.
    pub missing: Mutex<HashSet<String>>,
}

impl FakeRunner {
    pub fn reply(&self, line: &str, success: bool, stdout: &str, stderr: &str) {
        self.replies.lock().unwrap().insert(
            line.to_string(),
            Output {
                success,
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
            },
        );
    }

    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Runner for FakeRunner {
    fn run<'a>(
        &'a self,
        program: &'a str,
        args: &'a [String],
        stdin: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Output, RunError>> {
        Box::pin(async move {
            if self.missing.lock().unwrap().contains(program) {
                return Err(RunError::NotFound {
                    program: program.to_string(),
                    package: super::package(program),
                });
            }
            let line = std::iter::once(program.to_string())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            self.calls.lock().unwrap().push(line.clone());
            if let Some(s) = stdin {
                self.scripts.lock().unwrap().push(s.to_string());
            }
            Ok(self
                .replies
                .lock()
                .unwrap()
                .get(&line)
                .cloned()
                .unwrap_or(Output {
                    success: true,
                    ..Default::default()
                }))
        })
    }
}
