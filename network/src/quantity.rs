//! Kubernetes resource quantities (`10M`, `1.5Gi`, `500k`), as the bandwidth
//! annotations use them, in plain units (bits per second there).

/// Parses a quantity into a whole number of units. Decimal suffixes k M G T P E are
/// powers of 1000, binary Ki Mi Gi Ti Pi Ei powers of 1024.
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return Err(format!("{text:?}: unknown suffix {suffix:?}")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    Ok((value * multiplier).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for (text, want) in [
            ("10M", 10_000_000),
            ("1Ki", 1024),
            ("1.5k", 1500),
            ("100", 100),
            ("2Gi", 2 << 30),
        ] {
            assert_eq!(parse_quantity(text), Ok(want), "{text}");
        }
        for bad in ["", "fast", "10X", "1..2M", "-5"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }
}
