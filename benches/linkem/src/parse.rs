//! Parsing of the command line's units: rates, durations, probabilities, and
//! per-direction pairs written `A2B/B2A`.

/// "100mbit", "1gbit", "500kbit", "1.5gbit", "100M", "0" (unlimited) -> bit/s.
pub fn rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = split_unit(&t);
    let mult: f64 = match mult {
        "" | "bit" | "bps" => 1.0,
        "k" | "kbit" | "kbps" => 1e3,
        "m" | "mbit" | "mbps" => 1e6,
        "g" | "gbit" | "gbps" => 1e9,
        u => return Err(format!("unknown rate unit {u:?} in {s:?} (use kbit/mbit/gbit)")),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad rate {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad rate {s:?}"));
    }
    Ok((v * mult).round() as u64)
}

/// "25ms", "100us", "1.5s", "2m", "0" -> nanoseconds.
pub fn duration_ns(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, unit) = split_unit(&t);
    let mult: f64 = match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        u => return Err(format!("unknown time unit {u:?} in {s:?}")),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok((v * mult).round() as u64)
}

/// "1%", "0.5%", "0.01" -> probability in [0, 1].
pub fn prob(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map_err(|_| format!("bad percentage {s:?}"))? / 100.0
    } else {
        t.parse::<f64>().map_err(|_| format!("bad probability {s:?}"))?
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("probability out of range: {s:?}"));
    }
    Ok(v)
}

/// "1%:5" -> (average loss 0.01, mean burst 5 packets).
pub fn ge_burst(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("expected AVG:BURST, e.g. 1%:5, got {s:?}"))?;
    let avg = prob(a)?;
    let len: f64 = b.trim().parse().map_err(|_| format!("bad mean burst length in {s:?}"))?;
    if !(avg > 0.0 && avg < 1.0 && len >= 1.0) || len.is_nan() {
        return Err(format!("need 0 < AVG < 100% and BURST >= 1 in {s:?}"));
    }
    Ok((avg, len))
}

/// "X" -> (X, X); "X/Y" -> (X, Y) for the a->b and b->a directions.
pub fn per_dir<T: Clone>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    match s.split_once('/') {
        Some((a, b)) => Ok((f(a)?, f(b)?)),
        None => {
            let v = f(s)?;
            Ok((v.clone(), v))
        }
    }
}

fn split_unit(t: &str) -> (&str, &str) {
    let i = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(t.len());
    (t[..i].trim(), t[i..].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(rate("100mbit").unwrap(), 100_000_000);
        assert_eq!(rate("1Gbit").unwrap(), 1_000_000_000);
        assert_eq!(rate("1.5gbit").unwrap(), 1_500_000_000);
        assert_eq!(rate("400M").unwrap(), 400_000_000);
        assert_eq!(rate("0").unwrap(), 0);
        assert!(rate("10 furlongs").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns("25ms").unwrap(), 25_000_000);
        assert_eq!(duration_ns("100us").unwrap(), 100_000);
        assert_eq!(duration_ns("0.1ms").unwrap(), 100_000);
        assert_eq!(duration_ns("2").unwrap(), 2_000_000_000);
        assert_eq!(duration_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(duration_ns("2m").unwrap(), 120_000_000_000);
        assert!(duration_ns("-1s").is_err());
    }

    #[test]
    fn probs() {
        assert_eq!(prob("1%").unwrap(), 0.01);
        assert_eq!(prob("0.5").unwrap(), 0.5);
        assert!(prob("150%").is_err());
        assert_eq!(ge_burst("1%:5").unwrap(), (0.01, 5.0));
        assert!(ge_burst("1%").is_err());
    }

    #[test]
    fn pairs() {
        assert_eq!(per_dir("1%", prob).unwrap(), (0.01, 0.01));
        assert_eq!(per_dir("1%/0", prob).unwrap(), (0.01, 0.0));
        assert_eq!(per_dir("25ms/50ms", duration_ns).unwrap(), (25_000_000, 50_000_000));
    }
}
