//! Plumbing shared by the subcommands: paths, running programs with the
//! project's tools on PATH, and numbered step headers that name the step
//! that failed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives in the repository root")
        .to_path_buf()
}

/// Where trunk writes the built client (`[build] dist` in Trunk.toml).
pub fn dist_dir() -> PathBuf {
    repo_root().join("dist")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` or `<repo>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                repo_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The cargo that runs us (so a pinned toolchain stays pinned), or `cargo`.
pub fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Cargo's bin directory, where `cargo install` puts trunk and wasm-bindgen.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"))
        .join("bin")
}

/// npm's binaryen ships the pinned `wasm-opt` that trunk runs on release builds.
pub fn binaryen_bin_dir() -> PathBuf {
    repo_root().join("node_modules/binaryen/bin")
}

/// PATH with the project's tool directories first.
pub fn tool_path() -> OsString {
    let mut dirs = vec![binaryen_bin_dir(), cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).expect("PATH entries contain no separator")
}

/// A command run from the repository root with the tool PATH.
pub fn command(program: impl Into<OsString>) -> Command {
    let mut command = Command::new(program.into());
    command.current_dir(repo_root()).env("PATH", tool_path());
    command
}

/// A `cargo` command (see [`cargo_program`]).
pub fn cargo() -> Command {
    command(cargo_program())
}

/// Runs `command` with inherited output and fails unless it exits 0.
pub fn run(command: &mut Command) -> Result<()> {
    println!("$ {}", describe(command));
    let status = command
        .status()
        .with_context(|| format!("could not start {}", describe(command)))?;
    if !status.success() {
        bail!("`{}` exited with {status}", describe(command));
    }
    Ok(())
}

/// The trimmed stdout of `program args` if it runs and exits 0, else `None`.
pub fn probe(program: impl Into<OsString>, args: &[&str]) -> Option<String> {
    let output = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether `program` is found on the tool PATH (or is a path that exists).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    std::env::split_paths(&tool_path())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The command line of `command`, for logs.
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(command.get_program())
        .to_string_lossy()
        .into_owned();
    std::iter::once(program)
        .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Numbered, timed steps: a clear header before each, the failing step's
/// name in the error, and a timing table at the end.
pub struct Steps {
    task: &'static str,
    started: Instant,
    done: Vec<(String, Duration)>,
}

impl Steps {
    pub fn new(task: &'static str) -> Self {
        Self {
            task,
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs one step; on failure the error names the step.
    pub fn step<T>(&mut self, name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
        let number = self.done.len() + 1;
        println!("\n==> [{} {number}] {name}", self.task);
        let started = Instant::now();
        match body() {
            Ok(value) => {
                self.done.push((name.to_owned(), started.elapsed()));
                Ok(value)
            }
            Err(error) => {
                self.done
                    .push((format!("{name} (FAILED)"), started.elapsed()));
                self.finish();
                Err(error.context(format!("step `{name}` of `{}` failed", self.task)))
            }
        }
    }

    /// Prints how long each step took.
    pub fn finish(&self) {
        println!(
            "\n==> {} finished in {}",
            self.task,
            seconds(self.started.elapsed())
        );
        for (name, took) in &self.done {
            println!("    {:>8}  {name}", seconds(*took));
        }
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}
