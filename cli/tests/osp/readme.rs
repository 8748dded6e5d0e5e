//! README.md is executable documentation: every command of its `sh` blocks runs here, in
//! order, as a new user would type it, in a folder of its own, against the `osp dev` the
//! README starts on a machine where port 4222 is taken; each must exit as the table below
//! says, with the output it names.
//!
//! How a line runs:
//! - `cargo build ...` and `scripts/test` are skipped: cargo built everything before this
//!   test, and `scripts/test` is what runs it. The folder's `target/debug` is the build
//!   this test belongs to, so the README's paths work as written.
//! - `osp dev ...` starts in the background, and the next line waits until it is up, as a
//!   person waits for its banner before going to another terminal.
//! - A line ending in `&` starts in the background; the next line waits for the output its
//!   entry in [`EXPECTED`] names (an agent's "ready" line).
//! - `NAME=...` (or `export NAME=...`) keeps `NAME` for the later lines, like a shell.
//! - Anything else runs in bash with those variables, and must finish.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a README command must do: exit with `exit` (a background one: print `ready`),
/// and print every text of `shows` (stdout and stderr together).
struct Expect {
    command: &'static str,
    exit: i32,
    shows: &'static [&'static str],
    /// Commands that follow the log until Ctrl-C run this long, then stop.
    follows: bool,
}

const fn shows(command: &'static str, shows: &'static [&'static str]) -> Expect {
    Expect { command, exit: 0, shows, follows: false }
}

/// The README's commands (by how each begins) and what each must show; a command not
/// named here must exit 0. Every entry must match a command, so the table cannot drift
/// from the README unnoticed.
const EXPECTED: &[Expect] = &[
    shows("target/debug/examples/agent --name rusty", &["heartbeating every"]),
    shows("osp agents --live", &["rusty", "online", "summarize"]),
    shows("osp registry register tools grep", &["grep"]),
    shows("osp registry find tools --where os=linux", &["grep"]),
    shows("osp registry list", &["agents", "tools"]),
    shows("osp run submit summarize --input '{\"text\": \"the quick brown fox\"}' --watch", &["completed", "quick"]),
    shows("osp run list", &["completed", "awaiting"]),
    shows("osp run approve $RUN", &["approved"]),
    shows("osp run watch $RUN", &["completed"]),
    Expect { command: "osp events tail", exit: 0, shows: &["following osp.v1.evt"], follows: true },
    shows("target/debug/examples/workflow_agents", &["ready"]),
    shows("osp run watch $FLOW", &["completed"]),
    shows("osp run get $FLOW", &["completed"]),
    shows("osp rules add examples/quality/rules.yaml", &["has-summary"]),
    shows("osp check examples/quality/summary.json --rules has-summary,short-summary,no-lorem", &["unqualified"]),
    Expect { command: "osp check examples/quality/lorem.json", exit: 1, shows: &["adverse"], follows: false },
    shows("osp audit query --opinion adverse", &["lorem-1", "adverse"]),
    shows("osp audit export lorem-1 -o audit.md", &["wrote audit lorem-1 to audit.md"]),
    shows("target/debug/examples/judge_agent", &["ready"]),
    shows("osp check examples/quality/summary.json --rules has-summary --judge", &["judge"]),
    shows("osp run submit summarize --input '{\"text\": \"the quick brown fox\"}' --checks", &["completed"]),
    shows("osp ctx set run:$WAITING findings/1", &["findings/1"]),
    shows("osp ctx ls run:$WAITING", &["findings/1"]),
    Expect {
        command: "osp settings set max_tokens 4096 --read-only && osp settings set max_tokens 8192",
        exit: 1,
        shows: &["read-only"],
        follows: false,
    },
    shows("osp settings ls", &["max_tokens", "4096"]),
    shows("osp prefs set user:$USER tone", &["dry"]),
    shows("osp env get global API_KEY --reveal", &["sk-123"]),
    shows("osp env get global API_KEY", &["********"]),
    shows("osp embed search global", &["n1"]),
    shows("osp ctx system rusty", &["rusty"]),
    shows("osp run approve $WAITING", &["approved"]),
    shows("osp replay run $FLOW --at 20", &["as of seq 20"]),
    shows("osp replay run $FLOW", &["run.completed"]),
    shows("osp log verify", &["OK"]),
    shows("osp doctor", &["service scheduler"]),
    shows("osp log export --run $FLOW -o run.ndjson", &["run.ndjson"]),
];

/// A README command, its line continuations joined.
struct Line {
    text: String,
    background: bool,
}

/// The commands of README.md's `sh` blocks, in order: comments and blank lines dropped,
/// continued lines joined.
fn readme_commands(readme: &str) -> Vec<Line> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line.trim_start_matches('`').trim() == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = without_comment(line);
        if let Some(continued) = code.trim_end().strip_suffix('\\') {
            pending.push_str(continued.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(code.trim());
        let text = std::mem::take(&mut pending).trim().to_owned();
        if text.is_empty() {
            continue;
        }
        match text.strip_suffix('&').filter(|rest| !rest.ends_with('&')) {
            Some(rest) => commands.push(Line { text: rest.trim().to_owned(), background: true }),
            None => commands.push(Line { text, background: false }),
        }
    }
    commands
}

/// `line` up to a `#` that starts a shell comment (outside quotes, after a blank).
fn without_comment(line: &str) -> &str {
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (at, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The folder the README's commands run in, and what they left running.
struct Session {
    folder: tempfile::TempDir,
    vars: BTreeMap<String, String>,
    background: Vec<(String, Child, PathBuf)>,
}

impl Session {
    fn bash(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command
            .args(["-c", script])
            .current_dir(self.folder.path())
            .env_remove("OSP_NATS_URL")
            .env_remove("OSP_UTC")
            .env("HOME", self.folder.path().join("home"))
            .env_remove("XDG_STATE_HOME")
            .env("USER", "reader")
            .envs(&self.vars);
        command
    }

    /// Runs `line` in the background with its output in a file, and waits until that
    /// output shows `ready` (or, for `osp dev`, its banner's last line).
    fn start(&mut self, line: &str, ready: &str) {
        let log = self.folder.path().join(format!("background-{}.log", self.background.len()));
        let out = std::fs::File::create(&log).unwrap();
        let child = self
            .bash(&format!("exec {line}"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.background.push((line.to_owned(), child, log.clone()));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(ready) {
                return;
            }
            let (_, child, _) = self.background.last_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("`{line}` stopped ({status}) before showing {ready:?}:\n{text}");
            }
            assert!(Instant::now() < deadline, "`{line}` did not show {ready:?} in 120 s:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `line` to its end (or for a few seconds, if it follows until stopped) and
    /// returns its exit code and output.
    fn run(&self, line: &str, follows: bool) -> (i32, String) {
        let mut child =
            self.bash(line).stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap();
        let readers = [child.stdout.take().map(read_all_boxed), child.stderr.take().map(read_all_boxed)];
        let deadline = Instant::now() + if follows { Duration::from_secs(3) } else { Duration::from_secs(180) };
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                assert!(follows, "`{line}` did not finish in 180 s");
                child.kill().unwrap();
                child.wait().unwrap();
                break 0;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output: String = readers.into_iter().flatten().map(|reader| reader.join().unwrap()).collect();
        (code, output)
    }

    /// Stops what runs in the background, newest first, as Ctrl-C would.
    fn stop_all(&mut self) {
        while let Some((line, mut child, log)) = self.background.pop() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                panic!("`{line}` did not stop on SIGTERM:\n{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        }
    }
}

fn read_all_boxed(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Holds 127.0.0.1:4222 for the test if nothing does, so `osp dev` must take another port
/// and every later command must find it by itself.
fn hold_port_4222() -> Option<TcpListener> {
    TcpListener::bind("127.0.0.1:4222").ok()
}

#[test]
fn every_readme_command_runs_in_order_as_written() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(repo.join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    assert!(commands.len() > 30, "README.md has {} commands", commands.len());

    let _port = hold_port_4222();
    let folder = tempfile::tempdir().unwrap();
    let built = Path::new(env!("CARGO_BIN_EXE_osp")).parent().unwrap();
    std::fs::create_dir_all(folder.path().join("target")).unwrap();
    std::os::unix::fs::symlink(built, folder.path().join("target/debug")).unwrap();
    std::os::unix::fs::symlink(repo.join("examples"), folder.path().join("examples")).unwrap();
    std::fs::create_dir_all(folder.path().join("home")).unwrap();
    assert!(built.join("examples/agent").is_file(), "the example agents are built by `cargo test` of osp-client");
    let mut session = Session { folder, vars: BTreeMap::new(), background: Vec::new() };
    session.vars.insert("PATH".into(), std::env::var("PATH").unwrap_or_default());

    let mut used = vec![false; EXPECTED.len()];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for line in &commands {
            let text = line.text.as_str();
            if text.starts_with("cargo build") || text == "scripts/test" {
                continue;
            }
            let expected = EXPECTED.iter().position(|e| text.starts_with(e.command));
            if let Some(at) = expected {
                used[at] = true;
            }
            let expected = expected.map(|at| &EXPECTED[at]);
            if text.starts_with("osp dev") {
                session.start(text, "Ctrl-C to stop.");
                continue;
            }
            if line.background {
                let ready = expected
                    .and_then(|e| e.shows.first())
                    .unwrap_or_else(|| panic!("`{text}` runs in the background: name its ready line in EXPECTED"));
                session.start(text, ready);
                continue;
            }
            if let Some((name, _)) = assignment(text) {
                let (code, output) = session.run(&format!("{text}\nprintf '\\n%s' \"${name}\""), false);
                assert_eq!(code, 0, "`{text}` failed:\n{output}");
                let value = output.rsplit('\n').next().unwrap_or_default().to_owned();
                assert!(!value.is_empty(), "`{text}` left {name} empty:\n{output}");
                session.vars.insert(name.to_owned(), value);
                continue;
            }
            let (code, output) = session.run(text, expected.is_some_and(|e| e.follows));
            // A transcript, shown when the test fails (or with --nocapture).
            println!("$ {text}\n{output}");
            let exit = expected.map_or(0, |e| e.exit);
            assert_eq!(code, exit, "`{text}` exited {code}, not {exit}:\n{output}");
            for shown in expected.map_or(&[][..], |e| e.shows) {
                assert!(output.contains(shown), "`{text}` did not show {shown:?}:\n{output}");
            }
        }
    }));
    session.stop_all();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let unused: Vec<_> = EXPECTED.iter().zip(&used).filter(|(_, used)| !**used).map(|(e, _)| e.command).collect();
    assert!(unused.is_empty(), "EXPECTED names commands README.md no longer has: {unused:?}");
}

/// `NAME=value` or `export NAME=value`: the name and the value's text.
fn assignment(line: &str) -> Option<(&str, &str)> {
    let line = line.strip_prefix("export ").unwrap_or(line);
    let (name, value) = line.split_once('=')?;
    let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then_some((name, value))
}

#[test]
fn commands_are_read_from_sh_blocks_with_comments_and_continuations() {
    let readme = "text\n```sh\ncargo build  # first\nA=$(osp run submit x --input '{\"a\": \"#1\"}')\nosp run submit y \\\n    --watch\nagent --name a &   # an agent\n```\n```text\nnot run\n```\n";
    let lines: Vec<_> = readme_commands(readme).into_iter().map(|l| (l.text, l.background)).collect();
    assert_eq!(
        lines,
        [
            ("cargo build".to_owned(), false),
            ("A=$(osp run submit x --input '{\"a\": \"#1\"}')".to_owned(), false),
            ("osp run submit y --watch".to_owned(), false),
            ("agent --name a".to_owned(), true),
        ]
    );
    assert_eq!(assignment("export PATH=\"$PWD/x:$PATH\""), Some(("PATH", "\"$PWD/x:$PATH\"")));
    assert_eq!(assignment("osp run list --where a=b"), None);
}
