//! The workload of `cargo xtask bench syscalls`: tight loops of the
//! operations an agent taxes, printing per-operation latency as JSON.
//!
//!   syscalls --file F --exec BIN [--exec-arg A] [--iters N]
//!
//! The TCP connects go to a listener of its own on 127.0.0.1.
//!
//! Under `cargo test` (debug build, no arguments) it runs a short smoke pass.
use std::{
    ffi::CString,
    net::{SocketAddr, TcpListener, TcpStream},
    time::Instant,
};

struct Opts {
    file: String,
    exec: String,
    exec_arg: Option<String>,
    iters: usize,
}

fn parse() -> Opts {
    let mut o = Opts {
        file: String::new(),
        exec: "/bin/true".into(),
        exec_arg: None,
        iters: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_default();
        match a.as_str() {
            "--file" => o.file = v(),
            "--exec" => o.exec = v(),
            "--exec-arg" => o.exec_arg = Some(v()),
            "--iters" => o.iters = v().parse().unwrap_or(o.iters),
            _ => {}
        }
    }
    o
}

fn stats(mut ns: Vec<u64>) -> serde_json::Value {
    ns.sort_unstable();
    let pct = |p: f64| ns[((ns.len() as f64 - 1.0) * p) as usize];
    let mean = ns.iter().sum::<u64>() as f64 / ns.len() as f64;
    serde_json::json!({"n": ns.len(), "p50": pct(0.5), "p99": pct(0.99), "mean": mean})
}

fn time(iters: usize, mut f: impl FnMut()) -> Vec<u64> {
    for _ in 0..iters / 10 + 1 {
        f(); // warm-up
    }
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

fn main() {
    let mut o = parse();
    let smoke = o.file.is_empty();
    let dir = std::env::temp_dir().join(format!("vardr-syscalls-{}", std::process::id()));
    if smoke {
        std::fs::create_dir_all(&dir).unwrap();
        o.file = dir.join("f").to_string_lossy().into_owned();
        std::fs::write(&o.file, "x").unwrap();
        o.iters = 200;
    }
    // Accept and drop, so the backlog never fills.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let path = CString::new(o.file.clone()).unwrap();
    let open = time(o.iters, || {
        // SAFETY: plain open(2)/close(2) on a valid C string.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
            assert!(fd >= 0, "open {} failed", o.file);
            libc::close(fd);
        }
    });
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let connect = time(o.iters, || {
        drop(TcpStream::connect(addr).expect("connect to the loopback listener"));
    });
    let exec_iters = (o.iters / 10).max(20);
    let exec = time(exec_iters, || {
        let mut c = std::process::Command::new(&o.exec);
        if let Some(a) = &o.exec_arg {
            c.arg(a);
        }
        assert!(c.status().expect("exec").success());
    });
    println!(
        "{}",
        serde_json::json!({"open_close": stats(open), "tcp_connect_close": stats(connect), "exec": stats(exec)})
    );
    if smoke {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
