//! One line per event for people, like Tetragon's compact output. Works on
//! the JSON form, so `vardr events -o compact` renders what the agent sent.
use serde_json::Value;

fn proc_line(p: &Value) -> String {
    let bin = p["binary"].as_str().unwrap_or("?");
    let args = p["arguments"].as_str().unwrap_or("");
    let where_ = p["container_id"]
        .as_str()
        .map(|c| format!("[{}] ", &c[..c.len().min(12)]))
        .unwrap_or_default();
    if args.is_empty() {
        format!("{where_}{bin}")
    } else {
        format!("{where_}{bin} {args}")
    }
}

/// " | layer2 deny by p1,p2 (killed)" when a Cedar policy decided.
fn layer2_suffix(e: &Value) -> String {
    let l = &e["layer2"];
    let Some(v) = l["verdict"].as_str() else {
        return String::new();
    };
    let policies: Vec<&str> = l["policies"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let resp = l["response"]
        .as_str()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(" | layer2 {v} by {}{resp}", policies.join(","))
}

/// The compact line for one event, or `None` for an unknown shape.
pub fn compact(ev: &Value) -> Option<String> {
    let line = compact_base(ev)?;
    let body = ev
        .get("process_exec")
        .or_else(|| ev.get("process_lsm"))
        .map(layer2_suffix)
        .unwrap_or_default();
    Some(line + &body)
}

fn compact_base(ev: &Value) -> Option<String> {
    let node = ev["node_name"].as_str().unwrap_or("");
    if let Some(e) = ev.get("process_exec") {
        return Some(format!("🚀 process {node} {}", proc_line(&e["process"])));
    }
    if let Some(e) = ev.get("process_exit") {
        let how = match e["signal"].as_str() {
            Some(sig) => sig.to_string(),
            None => e["status"].to_string(),
        };
        return Some(format!(
            "💥 exit    {node} {} {how}",
            proc_line(&e["process"])
        ));
    }
    if let Some(e) = ev.get("process_lsm") {
        let icon = match e["verdict"].as_str() {
            Some("deny") => "🚫 deny   ",
            Some("audit") => "👀 audit  ",
            Some("allow") => "🔎 observe",
            _ => "⚠️  alert  ",
        };
        let a = &e["args"][0];
        let target = if let Some(s) = a.get("sock_arg") {
            format!("{}:{}", s["daddr"].as_str().unwrap_or("?"), s["dport"])
        } else {
            a.get("file_arg")
                .or_else(|| a.get("linux_binprm_arg"))
                .or_else(|| a.get("path_arg"))
                .and_then(|f| f["path"].as_str())
                .unwrap_or("?")
                .to_string()
        };
        // An lsmhooks hook's event names its hook as Tetragon does.
        let hook = e["hook"]
            .as_str()
            .or_else(|| e["function_name"].as_str())
            .unwrap_or("?");
        // Operations other than the hook's own: file_write/unlink, exec/mmap_file, ...
        let hook = match e["function_name"].as_str().and_then(|f| {
            f.strip_prefix("security_path_").or_else(|| {
                f.strip_prefix("security_")
                    .filter(|f| f.contains("mmap") || f.contains("mprotect"))
            })
        }) {
            Some(op) => format!("{hook}/{op}"),
            None => hook.to_string(),
        };
        return Some(format!(
            "{icon}{node} {} {hook} {target} (rule {}, {})",
            proc_line(&e["process"]),
            e["rule"].as_str().unwrap_or("?"),
            e["backend"].as_str().unwrap_or("?"),
        ));
    }
    // TracingPolicy kprobes, tracepoints and uprobes, named as Tetragon's
    // compact view names them.
    for (key, label) in [
        ("process_kprobe", "syscall"),
        ("process_tracepoint", "tracepoint"),
        ("process_uprobe", "uprobe"),
    ] {
        let Some(e) = ev.get(key) else {
            continue;
        };
        let icon = match e["verdict"].as_str() {
            Some("deny") => "🚫 ",
            Some("audit") => "👀 ",
            _ => "🔎 ",
        };
        let s = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        let what = match key {
            "process_kprobe" => s("function_name"),
            "process_tracepoint" => format!("{}/{}", s("subsys"), s("event")),
            _ => format!("{}:{}", s("path"), s("symbol")),
        };
        return Some(format!(
            "{icon}{label} {node} {} {what} (rule {}, {})",
            proc_line(&e["process"]),
            e["rule"].as_str().unwrap_or("-"),
            s("action"),
        ));
    }
    if let Some(e) = ev.get("events_lost") {
        return Some(format!(
            "❗ lost    {node} {} events (total {})",
            e["count"], e["total"]
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_each_kind() {
        let p = json!({"binary": "/usr/bin/curl", "arguments": "https://x"});
        let exec = json!({"process_exec": {"process": p}, "node_name": "n1"});
        assert_eq!(
            compact(&exec).unwrap(),
            "🚀 process n1 /usr/bin/curl https://x"
        );
        let exit = json!({"process_exit": {"process": p, "status": 0, "signal": "SIGKILL"}, "node_name": "n1"});
        assert!(compact(&exit).unwrap().ends_with("SIGKILL"));
        let lsm = json!({"process_lsm": {"process": p, "verdict": "deny", "hook": "connect",
            "rule": "no-meta", "backend": "lsm",
            "args": [{"sock_arg": {"daddr": "169.254.169.254", "dport": 80}}]}, "node_name": "n1"});
        assert_eq!(
            compact(&lsm).unwrap(),
            "🚫 deny   n1 /usr/bin/curl https://x connect 169.254.169.254:80 (rule no-meta, lsm)"
        );
        let unlink = json!({"process_lsm": {"process": p, "verdict": "deny", "hook": "file_write",
            "function_name": "security_path_unlink", "rule": "ro", "backend": "lsm",
            "args": [{"file_arg": {"path": "/etc/passwd", "flags": 0}}]}, "node_name": "n1"});
        assert_eq!(
            compact(&unlink).unwrap(),
            "🚫 deny   n1 /usr/bin/curl https://x file_write/unlink /etc/passwd (rule ro, lsm)"
        );
        let kp = json!({"process_kprobe": {"process": p, "verdict": "deny", "function_name": "do_mkdirat",
            "rule": "kill-mkdir-test.kprobes.0.0", "action": "KPROBE_ACTION_SIGKILL"}, "node_name": "n1"});
        let line = compact(&kp).expect("kprobe line");
        assert!(
            line.contains("syscall n1")
                && line.contains("do_mkdirat")
                && line.contains("KPROBE_ACTION_SIGKILL"),
            "{line}"
        );
        let tp = json!({"process_tracepoint": {"process": p, "verdict": "alert", "subsys": "sched",
            "event": "sched_process_exec", "action": "KPROBE_ACTION_POST"}, "node_name": "n1"});
        assert!(compact(&tp)
            .expect("tracepoint line")
            .contains("sched/sched_process_exec"));
        let l2 = json!({"process_exec": {"process": p, "layer2": {"verdict": "deny",
            "policies": ["a", "b"], "severity": "high", "response": "killed"}}, "node_name": "n1"});
        assert_eq!(
            compact(&l2).unwrap(),
            "🚀 process n1 /usr/bin/curl https://x | layer2 deny by a,b (killed)"
        );
        assert!(compact(&json!({"x": 1})).is_none());
    }
}
