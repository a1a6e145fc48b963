//! Which product ids a run touches, and in what proportions.
//!
//! Ids come from the file `seed` writes (one id per line), from a range, or
//! from a list (tests). A [`KeyPicker`] draws indexes into that list: always
//! the first (`hot`), uniformly, or Zipf-distributed so that index 0 is the
//! most popular key, index 1 the second, and so on.

use std::{fmt, path::PathBuf};

use anyhow::{Context, bail};
use rand::{Rng, distr::Uniform};
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

/// Where the product ids come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    /// A file with one id per line (blank lines and `#` comments ignored).
    File(PathBuf),
    /// Every id in `first..=last`.
    Range { first: i64, last: i64 },
    /// Ids given directly.
    List(Vec<i64>),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::File(PathBuf::from(".bench/ids.txt"))
    }
}

impl Keys {
    /// Loads the ids, in order; fails on an empty set.
    pub fn load(&self) -> anyhow::Result<Vec<i64>> {
        let ids = match self {
            Keys::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading ids from {}", path.display()))?;
                parse_ids(&text).with_context(|| format!("in {}", path.display()))?
            }
            Keys::Range { first, last } => (*first..=*last).collect(),
            Keys::List(ids) => ids.clone(),
        };
        if ids.is_empty() {
            bail!("no product ids to use ({self})");
        }
        Ok(ids)
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keys::File(path) => write!(f, "file {}", path.display()),
            Keys::Range { first, last } => write!(f, "range {first}..={last}"),
            Keys::List(ids) => write!(f, "{} listed ids", ids.len()),
        }
    }
}

fn parse_ids(text: &str) -> anyhow::Result<Vec<i64>> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| {
            line.parse::<i64>()
                .with_context(|| format!("line {}: {line:?} is not an id", n + 1))
        })
        .collect()
}

/// Parses `A..=B` (inclusive) or `A..B` (exclusive), as in Rust.
pub fn parse_range(raw: &str) -> anyhow::Result<Keys> {
    let (first, last, inclusive) = if let Some((a, b)) = raw.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = raw.split_once("..") {
        (a, b, false)
    } else {
        bail!("id range {raw:?} must look like 1..=1000");
    };
    let first: i64 = first.trim().parse().context("id range start")?;
    let mut last: i64 = last.trim().parse().context("id range end")?;
    if !inclusive {
        last -= 1;
    }
    if first < 1 || last < first {
        bail!("id range {raw:?} is empty or not positive");
    }
    Ok(Keys::Range { first, last })
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dist {
    /// Always the first key: the best case for any cache.
    Hot,
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `s`: rank k is drawn with weight 1/k^s.
    Zipf { s: f64 },
}

impl fmt::Display for Dist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dist::Hot => f.write_str("hot"),
            Dist::Uniform => f.write_str("uniform"),
            Dist::Zipf { s } => write!(f, "zipf(s={s})"),
        }
    }
}

/// The distribution name on the command line; `s` comes from `--zipf-s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistName {
    Hot,
    Uniform,
    Zipf,
}

impl DistName {
    /// The distribution with its parameter.
    pub fn with_s(self, s: f64) -> Dist {
        match self {
            DistName::Hot => Dist::Hot,
            DistName::Uniform => Dist::Uniform,
            DistName::Zipf => Dist::Zipf { s },
        }
    }
}

/// Draws indexes into a key list of a fixed length. Cheap to clone: each
/// worker owns one and draws with its own RNG, so drawing takes no lock.
#[derive(Debug, Clone)]
pub struct KeyPicker {
    inner: Picker,
}

#[derive(Debug, Clone)]
enum Picker {
    Hot,
    Uniform(Uniform<usize>),
    /// Samples ranks `1..=n` as floats.
    Zipf(Zipf<f64>, usize),
}

impl KeyPicker {
    /// A picker over `n` keys (n ≥ 1).
    pub fn new(dist: Dist, n: usize) -> anyhow::Result<Self> {
        if n == 0 {
            bail!("no keys to draw from");
        }
        let inner = match dist {
            Dist::Hot => Picker::Hot,
            Dist::Uniform => Picker::Uniform(Uniform::new(0, n).context("uniform over the keys")?),
            Dist::Zipf { s } => {
                if !(s.is_finite() && s >= 0.0) {
                    bail!("the Zipf exponent must be ≥ 0, got {s}");
                }
                Picker::Zipf(Zipf::new(n as f64, s).context("Zipf over the keys")?, n)
            }
        };
        Ok(Self { inner })
    }

    /// The next key index, in `0..n`.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        match &self.inner {
            Picker::Hot => 0,
            Picker::Uniform(u) => u.sample(rng),
            // Ranks start at 1; the float is integral but clamp anyway.
            Picker::Zipf(z, n) => (z.sample(rng) as usize).clamp(1, *n) - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;

    #[test]
    fn ranges_parse_like_rust() {
        assert_eq!(
            parse_range("1..=3").unwrap(),
            Keys::Range { first: 1, last: 3 }
        );
        assert_eq!(
            parse_range("5..8").unwrap(),
            Keys::Range { first: 5, last: 7 }
        );
        assert!(parse_range("3..=1").is_err());
        assert!(parse_range("0..=4").is_err());
        assert!(parse_range("abc").is_err());
    }

    #[test]
    fn id_files_skip_blanks_and_comments() {
        assert_eq!(parse_ids("# ids\n1\n\n 2 \n3\n").unwrap(), vec![1, 2, 3]);
        assert!(parse_ids("1\nx\n").is_err());
    }

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let picker = KeyPicker::new(Dist::Zipf { s: 1.0 }, 1000).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[picker.pick(&mut rng)] += 1;
        }
        // Rank 1 has weight 1/H(1000) ≈ 13 %; rank 2 half of that.
        assert!(counts[0] > 11_000 && counts[0] < 15_500, "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        assert!(counts[999] < 100);
    }

    #[test]
    fn hot_and_uniform() {
        let mut rng = SmallRng::seed_from_u64(7);
        let hot = KeyPicker::new(Dist::Hot, 10).unwrap();
        assert!((0..100).all(|_| hot.pick(&mut rng) == 0));
        let uniform = KeyPicker::new(Dist::Uniform, 10).unwrap();
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[uniform.pick(&mut rng)] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
