//! VM tier: BPF LSM end-to-end tests. The development kernel refuses
//! trampoline programs, so these run inside QEMU (`cargo xtask vm-test`).
//! `VARDR_EXPECT_BACKEND` (set by the VM runner) states what the probe must
//! find on the booted kernel, so a missing LSM fails instead of skipping.
mod common;

use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, RingBuf},
    programs::Lsm,
    Btf,
};
use common::{require_root, run_in_cgroup, TempDir};
use vardr::{
    bpf,
    events::{self, Event},
    kernel::{self, cgroup::OwnedCgroup},
    probe::{self, Backend, HookKind},
};
use vardr_common::{Config, PathRule, RuleAction, Verdict, PATH_MAX};

fn expected_backend() -> Option<Backend> {
    match std::env::var("VARDR_EXPECT_BACKEND").ok()?.as_str() {
        "lsm" => Some(Backend::Lsm),
        "fallback" => Some(Backend::Fallback),
        "audit" => Some(Backend::Audit),
        other => panic!("bad VARDR_EXPECT_BACKEND {other}"),
    }
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn probe_reports_expected_backends() {
    if !require_root("probe_reports_expected_backends") {
        return;
    }
    let report = probe::run();
    eprintln!("{}", probe::table(&report));
    let Some(want) = expected_backend() else {
        eprintln!("SKIPPED probe_reports_expected_backends: VARDR_EXPECT_BACKEND not set");
        return;
    };
    for hook in HookKind::ALL {
        let got = report.backend(hook).expect("backend listed");
        assert_eq!(got.backend, want, "{hook}: {}", got.reason);
    }
    // The claim must match what actually loads.
    assert_eq!(
        want == Backend::Lsm,
        report.program("lsm").is_some_and(|c| c.ok) && report.bpf_lsm_enabled.ok
    );
}

fn path_key(path: &str) -> Key<[u8; PATH_MAX]> {
    let mut data = [0u8; PATH_MAX];
    data[..path.len()].copy_from_slice(path.as_bytes());
    // The NUL is part of the key: an exact path does not match longer names.
    Key::new(((path.len() + 1) * 8) as u32, data)
}

#[test]
#[ignore = "VM tier: run by `cargo xtask vm-test`"]
fn lsm_file_open_denies_only_inside_test_cgroup() {
    let name = "lsm_file_open_denies_only_inside_test_cgroup";
    if !require_root(name) {
        return;
    }
    let report = probe::run();
    let file_backend = report.backend(HookKind::File).expect("file backend");
    if file_backend.backend != Backend::Lsm {
        assert_ne!(
            expected_backend(),
            Some(Backend::Lsm),
            "LSM expected on this kernel: {}",
            file_backend.reason
        );
        eprintln!("SKIPPED {name}: {}", file_backend.reason);
        return;
    }

    let dir = TempDir::new("e2e-lsm");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "top secret\n").unwrap();
    let secret_str = secret.to_str().unwrap();
    let root = kernel::cgroup::root().expect("cgroup2 mounted");
    let cg = OwnedCgroup::create(&root, &format!("vardr-e2e-{}", std::process::id()))
        .expect("create test cgroup");

    let offsets = kernel::btf::kernel_offsets().expect("BTF offsets");
    bpf::raise_memlock_limit();
    let mut ebpf = bpf::load_agent(&offsets).expect("load agent object");
    let set_enforce = |ebpf: &mut aya::Ebpf, enforce: u32| {
        let mut config: Array<_, Config> =
            Array::try_from(ebpf.map_mut(bpf::maps::CONFIG).unwrap()).unwrap();
        let cfg = Config {
            enforce,
            scope_level: kernel::cgroup::level(&root, &cg.path).unwrap(),
            scope_cgroup_id: cg.id().unwrap(),
        };
        config.set(0, cfg, 0).unwrap();
    };
    set_enforce(&mut ebpf, 1);
    {
        let mut rules: LpmTrie<_, [u8; PATH_MAX], PathRule> =
            LpmTrie::try_from(ebpf.map_mut(bpf::maps::FILE_RULES).unwrap()).unwrap();
        let rule = PathRule {
            rule_id: 7,
            action: RuleAction::Deny as u32,
        };
        rules.insert(&path_key(secret_str), rule, 0).unwrap();
    }
    let btf = Btf::from_sys_fs().unwrap();
    let prog: &mut Lsm = ebpf
        .program_mut(bpf::progs::LSM_FILE_OPEN)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load("file_open", &btf).expect("lsm program loads");
    prog.attach().expect("lsm program attaches");
    let mut ring = RingBuf::try_from(ebpf.take_map(bpf::maps::EVENTS).unwrap()).unwrap();

    // Inside the test cgroup: EPERM.
    let denied = run_in_cgroup(&cg.path, &format!("cat {secret_str}"));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(!denied.status.success(), "open inside cgroup succeeded");
    assert!(
        stderr.contains("Operation not permitted"),
        "expected EPERM, got: {stderr}"
    );
    assert!(denied.stdout.is_empty());

    // Outside it: the same file opens fine.
    let control = std::process::Command::new("cat")
        .arg(&secret)
        .output()
        .unwrap();
    assert!(control.status.success(), "control open failed");
    assert_eq!(control.stdout, b"top secret\n");

    // Another file inside the cgroup is not affected.
    let other = dir.path().join("other");
    std::fs::write(&other, "fine\n").unwrap();
    let ok = run_in_cgroup(&cg.path, &format!("cat {}", other.display()));
    assert!(ok.status.success(), "unrelated open inside cgroup failed");

    // Audit mode: the open succeeds and the event says it would have been denied.
    set_enforce(&mut ebpf, 0);
    let audited = run_in_cgroup(&cg.path, &format!("cat {secret_str}"));
    assert!(audited.status.success(), "audit mode blocked the open");
    assert_eq!(audited.stdout, b"top secret\n");

    let mut verdicts = Vec::new();
    while let Some(item) = ring.next() {
        if let Ok(Event::FileOpen {
            header,
            rule_id,
            verdict,
            path,
        }) = events::decode(&item)
        {
            assert_eq!(path, secret_str);
            assert_eq!(rule_id, 7);
            assert_eq!(header.cgroup_id, cg.id().unwrap());
            verdicts.push(verdict);
        }
    }
    // One deny, then the audited open. On overlayfs (the VM's /tmp) 6.1 also
    // checks the backing file under the same path, so an open may report twice.
    assert_eq!(verdicts.first(), Some(&Verdict::Deny), "{verdicts:?}");
    assert!(
        verdicts.len() >= 2 && verdicts[1..].iter().all(|v| *v == Verdict::Audit),
        "{verdicts:?}"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"top secret\n");
}
