//! `memory.x`, the linker script fragment that declares a board's memory regions, read by
//! one parser: the build checks the arena against the `RAM` region, the HIL harness
//! attributes an image's sections to regions.

/// A region of `memory.x` (`NAME : ORIGIN = ..., LENGTH = ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its name (`FLASH`, `RAM`, ...).
    pub name: String,
    /// First address.
    pub origin: u64,
    /// Bytes.
    pub length: u64,
}

impl Region {
    /// Whether `address` lies inside.
    pub fn contains(&self, address: u64) -> bool {
        address >= self.origin && address - self.origin < self.length
    }
}

/// Parses `0x...`, decimal, and `K`/`M` suffixes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, scale) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1024),
        b'M' | b'm' => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok()?,
        None => digits.replace('_', "").parse().ok()?,
    };
    value.checked_mul(scale)
}

/// The regions `memory.x` declares (lines `NAME : ORIGIN = a, LENGTH = b`; arithmetic is not
/// understood, and such lines are skipped).
pub fn regions(memory_x: &str) -> Vec<Region> {
    // Comments out, so that commented-out regions are not read.
    let mut text = String::new();
    let mut rest = memory_x;
    while let Some(start) = rest.find("/*") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("*/")
            .map_or("", |end| &rest[start + end + 2..]);
    }
    text.push_str(rest);
    text.lines()
        .filter_map(|line| {
            let (name, spec) = line.split_once(':')?;
            let name = name.split_whitespace().next()?.to_owned();
            let origin = spec.split("ORIGIN").nth(1)?.trim_start_matches([' ', '=']);
            let origin = parse_size(origin.split(',').next()?)?;
            let length = spec.split("LENGTH").nth(1)?.trim_start_matches([' ', '=']);
            let length = parse_size(length.split([',', '}']).next()?)?;
            Some(Region {
                name,
                origin,
                length,
            })
        })
        .collect()
}

/// The length of the `RAM` region `memory_x` declares, if it declares one.
pub fn ram_length(memory_x: &str) -> Option<usize> {
    regions(memory_x)
        .into_iter()
        .find(|region| region.name == "RAM")
        .and_then(|region| usize::try_from(region.length).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_x_regions_are_read() {
        let memory_x = "/* FLASH : ORIGIN = 0x1, LENGTH = 2 */\nMEMORY\n{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 1024K\n  RAM   : ORIGIN = 0x20000000, LENGTH = 256K\n  SRAM4 : ORIGIN = 0x20080000, LENGTH = 4K\n}\n";
        let regions = regions(memory_x);
        assert_eq!(
            regions,
            vec![
                Region {
                    name: "FLASH".into(),
                    origin: 0,
                    length: 1 << 20
                },
                Region {
                    name: "RAM".into(),
                    origin: 0x2000_0000,
                    length: 256 * 1024
                },
                Region {
                    name: "SRAM4".into(),
                    origin: 0x2008_0000,
                    length: 4096
                },
            ]
        );
        assert!(regions[1].contains(0x2003_ffff));
        assert!(!regions[1].contains(0x2004_0000));
    }

    #[test]
    fn ram_length_reads_memory_x() {
        let memory_x = "MEMORY\n{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 1024K\n  RAM   : ORIGIN = 0x20000000, LENGTH = 256K\n}\n";
        assert_eq!(ram_length(memory_x), Some(256 * 1024));
        assert_eq!(
            ram_length("RAM : ORIGIN = 0x20000000, LENGTH = 0x50000"),
            Some(0x50000)
        );
        assert_eq!(
            ram_length("RAM : ORIGIN = 0x20000000, LENGTH = 1M }"),
            Some(1 << 20)
        );
        assert_eq!(ram_length("FLASH : ORIGIN = 0, LENGTH = 1M"), None);
        assert_eq!(
            ram_length("/* RAM : ORIGIN = 0, LENGTH = 1M */ FLASH : ORIGIN = 0, LENGTH = 1M"),
            None
        );
    }
}
