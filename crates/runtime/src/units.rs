//! Signal names and sizes as users type them, shared by berth-runtime and the engine.

use anyhow::{Result, bail};

/// `TERM`, `SIGTERM`, `sigterm` or `15` -> 15.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if nix::sys::signal::Signal::try_from(n).is_ok() || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&n) {
            return Ok(n);
        }
        bail!("unknown signal {s:?}");
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") { up } else { format!("SIG{up}") };
    // Real-time signals by name: RTMIN, RTMIN+N, RTMAX, RTMAX-N.
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let rt = match name.strip_prefix("SIGRTMIN") {
        Some("") => Some(min),
        Some(r) => r.strip_prefix('+').and_then(|n| n.parse::<i32>().ok()).map(|n| min + n),
        None => match name.strip_prefix("SIGRTMAX") {
            Some("") => Some(max),
            Some(r) => r.strip_prefix('-').and_then(|n| n.parse::<i32>().ok()).map(|n| max - n),
            None => None,
        },
    };
    if let Some(n) = rt {
        return if (min..=max).contains(&n) { Ok(n) } else { bail!("unknown signal {s:?}") };
    }
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

/// Sizes such as 256m, 1g, 512k, 1.5g or plain bytes; -1 means unlimited.
pub fn parse_size(s: &str) -> Result<i64> {
    if s == "-1" {
        return Ok(-1);
    }
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("invalid size: {s:?} (use e.g. 256m, 1g)"))?;
    if !(0.0..9.0e18).contains(&n) {
        bail!("invalid size: {s:?}");
    }
    Ok((n * mult as f64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_sizes() {
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
        assert_eq!(parse_signal("RTMIN").unwrap(), libc::SIGRTMIN());
        assert_eq!(parse_signal("SIGRTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse_signal("rtmax-1").unwrap(), libc::SIGRTMAX() - 1);
        assert!(parse_signal("RTMIN+99").is_err());
        assert_eq!(parse_size("256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("12q").is_err());
    }
}
