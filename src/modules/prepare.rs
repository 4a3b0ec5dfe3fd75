//! Upload → bytes the engine can compile: WAT to binary, interface detection,
//! and the rewrite that gives the host what old guests never exported (their
//! function table and memory) or imported instead of defining (`env.memory`).

use std::borrow::Cow;
use std::fmt;

use sha2::{Digest, Sha256};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasmparser::{Encoding, ExternalKind, Parser, Payload, TypeRef};

use crate::abi::terrafirma::{MEMORY_EXPORT, TABLE_EXPORT};
use crate::executor::Abi;

/// Why an upload is not a module this node can serve. Shown to the uploader.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("not WebAssembly: {0}")]
    NotWasm(String),
    #[error("invalid module: {0}")]
    Invalid(String),
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// A component that implements a world the node does not serve.
    #[error("the component exports {0}, not `wasi:http/incoming-handler`: the node serves wasi:http/proxy components")]
    OtherWorld(String),
    /// A `wasi:cli/run` command: `terrafirma run` runs it; the node does not serve it.
    #[error(
        "the component is a wasi:cli command (exports `wasi:cli/run`); the node serves wasi:http/proxy components (`terrafirma run` runs commands)"
    )]
    CommandComponent,
    #[error("module exports neither `run` (Terrafirma handler) nor `_start` (WASI command)")]
    NoEntryPoint,
    #[error("unsupported module: {0}")]
    Unsupported(String),
}

/// A module ready to compile.
#[derive(Debug)]
pub struct Prepared {
    /// The binary module as uploaded (WAT already turned into binary): what is
    /// stored under `DATA/sites`.
    pub original: Vec<u8>,
    /// Hex sha256 of `original`.
    pub sha256: String,
    pub abi: Abi,
    /// What the engine compiles: `original` with the host's exports added.
    pub rewritten: Vec<u8>,
}

/// Turns uploaded bytes (binary or WAT text) into a `Prepared` module.
pub fn prepare(upload: &[u8]) -> Result<Prepared, PrepareError> {
    let binary: Cow<[u8]> = if upload.starts_with(b"\0asm") {
        Cow::Borrowed(upload)
    } else if looks_like_text(upload) {
        Cow::Owned(wat::parse_bytes(upload).map_err(|e| PrepareError::NotWasm(e.to_string()))?.into_owned())
    } else {
        return Err(PrepareError::NotWasm("missing the `\\0asm` magic header".into()));
    };
    let sha256 = hex::encode(Sha256::digest(&binary));
    if Parser::is_component(&binary) {
        let abi = component_world(&binary)?;
        return Ok(Prepared { rewritten: binary.to_vec(), original: binary.into_owned(), sha256, abi });
    }
    let (abi, rewritten) = rewrite(&binary)?;
    Ok(Prepared { original: binary.into_owned(), sha256, abi, rewritten })
}

/// Which interface a component implements, from its top-level exports:
/// `wasi:http/incoming-handler` (any 0.2 version) makes it a wasi:http
/// handler. Components are compiled as they are uploaded.
fn component_world(binary: &[u8]) -> Result<Abi, PrepareError> {
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(binary) {
        match payload.map_err(|e| PrepareError::InvalidComponent(e.to_string()))? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| PrepareError::InvalidComponent(e.to_string()))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    let interface = |name: &str| name.split('@').next().unwrap_or(name).to_owned();
    if exports.iter().any(|name| interface(name) == "wasi:http/incoming-handler") {
        Ok(Abi::WasiHttp)
    } else if exports.iter().any(|name| interface(name) == "wasi:cli/run") {
        Err(PrepareError::CommandComponent)
    } else if exports.is_empty() {
        Err(PrepareError::OtherWorld("nothing".into()))
    } else {
        Err(PrepareError::OtherWorld(exports.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")))
    }
}

fn looks_like_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| text.trim_start().starts_with('(') || text.trim_start().starts_with(";;"))
}

/// What the rewrite learns while copying a module.
#[derive(Default)]
struct Shape {
    memory_import: Option<wasmparser::MemoryType>,
    defined_memories: u32,
    tables: u32,
    exports: Vec<(String, ExternalKind, u32)>,
}

fn invalid(e: impl fmt::Display) -> PrepareError {
    PrepareError::Invalid(e.to_string())
}

/// Copies the module section by section, dropping a memory import in favour
/// of a defined memory of the same type and adding the host's exports.
fn rewrite(binary: &[u8]) -> Result<(Abi, Vec<u8>), PrepareError> {
    let mut shape = Shape::default();
    let mut out = wasm_encoder::Module::new();
    let mut pending_memory: Option<wasm_encoder::MemoryType> = None;
    let mut reencoder = RoundtripReencoder;

    for payload in Parser::new(0).parse_all(binary) {
        let payload = payload.map_err(invalid)?;
        if let Some((id, _)) = payload.as_section() {
            // The memory section (5) sits after tables (4) and before every
            // later section: emit the converted memory import there.
            if pending_memory.is_some() && id != 0 && !matches!(id, 1..=4) {
                if id == 5 {
                    return Err(PrepareError::Unsupported("more than one linear memory".into()));
                }
                let mut memories = wasm_encoder::MemorySection::new();
                memories.memory(pending_memory.take().expect("checked above"));
                out.section(&memories);
                shape.defined_memories += 1;
            }
        }
        match payload {
            Payload::Version { encoding, .. } => {
                if encoding == Encoding::Component {
                    return Err(PrepareError::InvalidComponent("nested in a core module".into()));
                }
            }
            Payload::ImportSection(reader) => {
                let mut imports = wasm_encoder::ImportSection::new();
                for import in reader.into_imports() {
                    let import = import.map_err(invalid)?;
                    match import.ty {
                        TypeRef::Memory(ty) if shape.memory_import.is_none() => {
                            shape.memory_import = Some(ty);
                            pending_memory = Some(reencoder.memory_type(ty).map_err(invalid)?);
                        }
                        TypeRef::Memory(_) => {
                            return Err(PrepareError::Unsupported("more than one linear memory".into()));
                        }
                        ty => {
                            if matches!(ty, TypeRef::Table(_)) {
                                shape.tables += 1;
                            }
                            imports.import(import.module, import.name, reencoder.entity_type(ty).map_err(invalid)?);
                        }
                    }
                }
                out.section(&imports);
            }
            Payload::TableSection(ref reader) => {
                shape.tables += reader.count();
                copy_raw(&mut out, &payload_section(&payload, binary)?);
            }
            Payload::MemorySection(ref reader) => {
                shape.defined_memories += reader.count();
                copy_raw(&mut out, &payload_section(&payload, binary)?);
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    shape.exports.push((export.name.to_owned(), export.kind, export.index));
                }
                out.section(&export_section(&mut shape)?);
            }
            Payload::CustomSection(reader) => {
                out.section(&wasm_encoder::CustomSection { name: reader.name().into(), data: reader.data().into() });
            }
            Payload::CodeSectionEntry(_) | Payload::End(_) => {}
            other => {
                if let Some(section) = payload_section_opt(&other, binary)? {
                    copy_raw(&mut out, &section);
                }
            }
        }
    }
    if shape.defined_memories > 1 {
        return Err(PrepareError::Unsupported("more than one linear memory".into()));
    }
    let has = |name: &str| shape.exports.iter().any(|(n, kind, _)| n == name && *kind == ExternalKind::Func);
    let abi = if has("run") {
        Abi::Terrafirma
    } else if has("_start") {
        Abi::WasiCgi
    } else {
        return Err(PrepareError::NoEntryPoint);
    };
    Ok((abi, out.finish()))
}

/// The export section as uploaded, plus the host's exports of memory 0 and
/// table 0 when the module has them.
fn export_section(shape: &mut Shape) -> Result<wasm_encoder::ExportSection, PrepareError> {
    let mut section = wasm_encoder::ExportSection::new();
    let mut reencoder = RoundtripReencoder;
    for (name, kind, index) in &shape.exports {
        section.export(name, reencoder.export_kind(*kind).map_err(invalid)?, *index);
    }
    let memories = shape.defined_memories + u32::from(shape.memory_import.is_some());
    if memories > 0 && !shape.exports.iter().any(|(n, ..)| n == MEMORY_EXPORT) {
        section.export(MEMORY_EXPORT, wasm_encoder::ExportKind::Memory, 0);
    }
    if shape.tables > 0 && !shape.exports.iter().any(|(n, ..)| n == TABLE_EXPORT) {
        section.export(TABLE_EXPORT, wasm_encoder::ExportKind::Table, 0);
    }
    Ok(section)
}

struct RawSection<'a> {
    id: u8,
    data: &'a [u8],
}

/// The bytes of a section payload. The parser reports a code section's
/// start with the size it declares before reading its entries, so a module
/// cut short inside its code section gets here with a range past its end.
fn payload_section_opt<'a>(payload: &Payload<'_>, binary: &'a [u8]) -> Result<Option<RawSection<'a>>, PrepareError> {
    let Some((id, range)) = payload.as_section() else { return Ok(None) };
    let data = binary.get(range).ok_or_else(|| invalid("a section runs past the end of the module"))?;
    Ok(Some(RawSection { id, data }))
}

fn payload_section<'a>(payload: &Payload<'_>, binary: &'a [u8]) -> Result<RawSection<'a>, PrepareError> {
    Ok(payload_section_opt(payload, binary)?.expect("a section payload"))
}

fn copy_raw(out: &mut wasm_encoder::Module, section: &RawSection<'_>) {
    out.section(&wasm_encoder::RawSection { id: section.id, data: section.data });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports_of(bytes: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            if let Payload::ExportSection(reader) = payload.unwrap() {
                names.extend(reader.into_iter().map(|e| e.unwrap().name.to_owned()));
            }
        }
        names
    }

    /// Found by `tests/all/fuzz.rs`: the parser reports a code section's
    /// start with its declared size, so a module cut inside its code made
    /// the rewrite slice past the end of the upload and panic.
    #[test]
    fn a_module_cut_short_inside_its_code_is_invalid_not_a_panic() {
        let whole = wat::parse_str(r#"(module (func (export "run") (drop (i32.add (i32.const 1) (i32.const 2)))))"#).unwrap();
        for cut in 1..whole.len() - 8 {
            // Inside the code section (the last): invalid; earlier, whatever
            // the prefix lacks. Never a panic.
            let result = prepare(&whole[..whole.len() - cut]);
            assert!(result.is_err(), "cut by {cut}");
            if cut <= 5 {
                assert!(matches!(result, Err(PrepareError::Invalid(_))), "cut by {cut}: {:?}", result.map(|p| p.abi));
            }
        }
    }

    #[test]
    fn adds_table_and_memory_exports() {
        let p = prepare(br#"(module (memory 1) (table 2 funcref) (func $f) (elem (i32.const 0) $f) (func (export "run")))"#).unwrap();
        assert_eq!(p.abi, Abi::Terrafirma);
        wasmparser::validate(&p.rewritten).unwrap();
        assert_eq!(exports_of(&p.rewritten), ["run", MEMORY_EXPORT, TABLE_EXPORT]);
    }

    #[test]
    fn imported_memory_becomes_defined() {
        let p = prepare(
            br#"(module (import "env" "memory" (memory 2 10)) (global i32 (i32.const 1))
                (data (i32.const 0) "hi") (func (export "run")))"#,
        )
        .unwrap();
        wasmparser::validate(&p.rewritten).unwrap();
        for payload in Parser::new(0).parse_all(&p.rewritten) {
            match payload.unwrap() {
                Payload::ImportSection(r) => assert_eq!(r.count(), 0),
                Payload::MemorySection(r) => assert_eq!(r.into_iter().next().unwrap().unwrap().initial, 2),
                _ => {}
            }
        }
    }

    #[test]
    fn rejects_bad_uploads() {
        assert!(matches!(prepare(b"hello there"), Err(PrepareError::NotWasm(_))));
        assert!(matches!(prepare(b"\0asm\x01\0\0\0\x01"), Err(PrepareError::Invalid(_))));
        assert!(matches!(prepare(br#"(module (func (export "other")))"#), Err(PrepareError::NoEntryPoint)));
        assert_eq!(prepare(br#"(module (func (export "_start")))"#).unwrap().abi, Abi::WasiCgi);
    }
}
