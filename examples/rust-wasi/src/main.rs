//! A WASI command, two ways.
//!
//! As a CGI handler (the node sets `REQUEST_METHOD`), it answers by query:
//! - `?env`: its CGI variables, one `NAME=value` line each, sorted;
//! - `?stderr=N`: writes N bytes of log lines to stderr, then answers `logged`;
//! - `?stdout=N`: a body of N bytes;
//! - anything else: `Hello from a Rust CGI guest!` and its path.
//!
//! From a shell (`terrafirma run rust-wasi.wasm ARGS...`):
//! - no arguments: `Hello, world!`;
//! - `args A B`: each argument on a line;
//! - `env NAME`: the variable's value, or `unset`;
//! - `cat PATH`: the file's contents (needs `--dir`);
//! - `exit N`: exits with code N.

use std::io::Write;

fn main() {
    if std::env::var_os("REQUEST_METHOD").is_some() {
        cgi();
    } else {
        command();
    }
}

fn cgi() {
    let query = std::env::var("QUERY_STRING").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if query == "env" {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        writeln!(out, "Content-Type: text/plain\n").unwrap();
        for (name, value) in vars {
            writeln!(out, "{name}={value}").unwrap();
        }
    } else if let Some(n) = query.strip_prefix("stderr=") {
        let n: usize = n.parse().unwrap_or(0);
        let line = "x".repeat(99);
        for _ in 0..n / 100 {
            eprintln!("{line}");
        }
        writeln!(out, "Content-Type: text/plain\n\nlogged").unwrap();
    } else if let Some(n) = query.strip_prefix("stdout=") {
        let n: usize = n.parse().unwrap_or(0);
        writeln!(out, "Content-Type: text/plain\n").unwrap();
        out.write_all(&vec![b'x'; n]).unwrap();
    } else {
        let path = std::env::var("PATH_INFO").unwrap_or_default();
        writeln!(out, "Content-Type: text/plain\n\nHello from a Rust CGI guest! path={path}").unwrap();
    }
}

fn command() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => println!("Hello, world!"),
        Some("args") => args[1..].iter().for_each(|arg| println!("{arg}")),
        Some("env") => println!("{}", std::env::var(&args[1]).unwrap_or_else(|_| "unset".into())),
        Some("cat") => match std::fs::read_to_string(&args[1]) {
            Ok(text) => print!("{text}"),
            Err(error) => {
                eprintln!("cannot read {}: {error}", args[1]);
                std::process::exit(2);
            }
        },
        Some("exit") => std::process::exit(args[1].parse().unwrap_or(1)),
        Some(other) => {
            eprintln!("unknown command {other}");
            std::process::exit(64);
        }
    }
}
