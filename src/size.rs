//! Human-readable byte sizes: `10MiB`, `2GB`, `512k`, plain `1048576`.

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: use bytes or a unit such as 500MB, 10MiB, 2GB, 1TiB")]
pub struct SizeError(pub String);

/// Parses a size. Decimal units (kB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB,
/// GiB, TiB) and bare letters (k, M, G, T) are powers of 1024. Case-insensitive.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError(input.to_string());
    let s = input.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(err()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(err);
    }
    let f: f64 = num.parse().map_err(|_| err())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(v.round() as u64)
}

/// A quota meaning "no limit"; the store keeps quotas as SQLite integers, so this is the
/// largest one it holds.
pub const UNLIMITED: u64 = i64::MAX as u64;

/// Parses a quota: a size, or `unlimited`.
pub fn parse_quota(input: &str) -> Result<u64, SizeError> {
    if input.trim().eq_ignore_ascii_case("unlimited") {
        return Ok(UNLIMITED);
    }
    parse_size(input)
}

/// Formats bytes with binary units, e.g. `1.50 MiB` (indicatif's formatter).
pub fn format_size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

/// Formats a quota: `unlimited` from 2^62 bytes up (no disk holds that much), else a size.
pub fn format_quota(bytes: u64) -> String {
    if bytes >= 1 << 62 {
        "unlimited".into()
    } else {
        format_size(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_decimal_and_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size(" 3 gib "), Ok(3 << 30));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in ["", "MB", "-1", "10XB", "1e9", "99999999999TiB", "1..2MB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_with_binary_units() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.50 KiB");
        assert_eq!(format_size(10 << 30), "10.00 GiB");
    }

    #[test]
    fn accepts_unlimited_quotas() {
        assert_eq!(parse_quota("unlimited"), Ok(UNLIMITED));
        assert_eq!(parse_quota("Unlimited"), Ok(UNLIMITED));
        assert_eq!(parse_quota("1MiB"), Ok(1 << 20));
        assert_eq!(format_quota(UNLIMITED), "unlimited");
        assert_eq!(format_quota(UNLIMITED - 5), "unlimited");
        assert_eq!(format_quota(1 << 20), "1.00 MiB");
    }
}
