//! Flash and RAM use of a board image, from its ELF and the board's `memory.x`.

use std::path::Path;

use object::{Object, ObjectSection, SectionFlags, SectionKind};

pub use ddm_board_build::memory_x::{regions, Region};

/// What an image takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes written to flash: every allocated section with contents (code, read-only data
    /// including the model blob, and the initial values of `.data`).
    pub flash_bytes: u64,
    /// Bytes of RAM taken by static data (`.data`, `.bss`, `.uninit`: the arena among them),
    /// without the stack.
    pub ram_bytes: u64,
    /// Bytes of the board's RAM region.
    pub ram_region_bytes: u64,
}

/// The sizes of the image at `elf` for a board whose `memory.x` declares `regions` (one of
/// them named `RAM`).
pub fn sizes(elf: &Path, regions: &[Region]) -> Result<Sizes, String> {
    let bytes = std::fs::read(elf).map_err(|e| format!("reading {}: {e}", elf.display()))?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    let ram = regions
        .iter()
        .find(|r| r.name == "RAM")
        .ok_or("memory.x declares no RAM region")?;
    let mut sizes = Sizes {
        flash_bytes: 0,
        ram_bytes: 0,
        ram_region_bytes: ram.length,
    };
    for section in file.sections() {
        let allocated = match section.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_ALLOC) != 0,
            _ => false,
        };
        if !allocated || section.size() == 0 {
            continue;
        }
        let has_contents = !matches!(
            section.kind(),
            SectionKind::UninitializedData | SectionKind::UninitializedTls
        );
        if has_contents {
            sizes.flash_bytes += section.size();
        }
        if ram.contains(section.address()) {
            sizes.ram_bytes += section.size();
        }
    }
    Ok(sizes)
}
