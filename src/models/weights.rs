//! A `.safetensors` file read tensor by tensor: opening reads only the header, and each
//! tensor's bytes are read from the file when a model asks for that tensor, straight into the
//! memory the tensor keeps. A model that builds only some of its parts (a CLIP's text tower for
//! a text query) reads only their weights.
//!
//! Why not a memory map: candle's CPU tensors own their memory, so a tensor loaded from a
//! mapped file is copied out of the map all the same, and every page of the map it touched
//! then counts in the process's resident memory as well, until the map is dropped (a
//! ViT-B/32's text tower: 254 MB copied plus 254 MB of mapped pages). A positional read gives
//! the same laziness without the second copy; the file's pages stay in the kernel's page
//! cache, shared and not charged to the process.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::Init;
use candle_nn::var_builder::SimpleBackend;

type CResult<T> = candle_core::Result<T>;

/// The largest header accepted (safetensors' own limit).
const MAX_HEADER: u64 = 100_000_000;

/// Where one tensor lies in the file.
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    /// Offset of its first byte from the start of the file.
    offset: u64,
    len: usize,
}

/// A `.safetensors` file whose tensors are read on demand (see the module docs).
pub struct SafetensorsFile {
    path: PathBuf,
    file: Mutex<File>,
    tensors: HashMap<String, Entry>,
}

#[derive(serde::Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

impl SafetensorsFile {
    /// Reads the header of `path` and checks that every tensor it lists lies inside the file
    /// with as many bytes as its shape and type need (so a truncated file fails here).
    pub fn open(path: &Path) -> CResult<Self> {
        let mut file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut n = [0u8; 8];
        file.read_exact(&mut n)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || 8 + n > file_len {
            candle_core::bail!("a header of {n} bytes in a file of {file_len} bytes: not a safetensors file");
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)?;
        let mut raw: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| candle_core::Error::Msg(format!("unreadable safetensors header: {e}")))?;
        raw.remove("__metadata__");
        let data_start = 8 + n;
        let mut tensors = HashMap::with_capacity(raw.len());
        for (name, value) in raw {
            let entry: RawEntry = serde_json::from_value(value)
                .map_err(|e| candle_core::Error::Msg(format!("unreadable safetensors entry {name}: {e}")))?;
            let (start, end) = entry.data_offsets;
            let Some(dtype) = dtype_of(&entry.dtype) else {
                // Kept out: asking for it fails as for any missing tensor.
                tracing::debug!("{}: tensor {name} of type {} skipped", path.display(), entry.dtype);
                continue;
            };
            let elements: usize = entry.shape.iter().product();
            let len = end.checked_sub(start).unwrap_or(u64::MAX);
            if len != (elements * dtype.size_in_bytes()) as u64 || data_start + end > file_len {
                candle_core::bail!(
                    "tensor {name} ({:?} {}) lies at bytes {start}..{end} of a {}-byte data section",
                    entry.shape,
                    entry.dtype,
                    file_len - data_start
                );
            }
            tensors.insert(name, Entry { dtype, shape: entry.shape, offset: data_start + start, len: len as usize });
        }
        Ok(SafetensorsFile { path: path.to_path_buf(), file: Mutex::new(file), tensors })
    }

    /// Reads one tensor from the file, in its stored type.
    pub fn load(&self, name: &str, device: &Device) -> CResult<Tensor> {
        let Some(e) = self.tensors.get(name) else {
            return Err(candle_core::Error::CannotFindTensor { path: name.to_string() });
        };
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.seek(SeekFrom::Start(e.offset))?;
        let read_failed = |err: std::io::Error| {
            candle_core::Error::Msg(format!("reading {name} from {}: {err}", self.path.display()))
        };
        if e.dtype == DType::F32 && cfg!(target_endian = "little") {
            // Read straight into the tensor's own vector: no second copy of the bytes.
            let mut values = vec![0f32; e.len / 4];
            // SAFETY: the byte view covers exactly the vector's memory, and every bit pattern
            // is a valid f32 (the file's little-endian order is the machine's).
            let bytes = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), e.len) };
            file.read_exact(bytes).map_err(read_failed)?;
            return Tensor::from_vec(values, e.shape.as_slice(), device);
        }
        let mut bytes = vec![0u8; e.len];
        file.read_exact(&mut bytes).map_err(read_failed)?;
        Tensor::from_raw_buffer(&bytes, e.dtype, &e.shape, device)
    }
}

impl SimpleBackend for SafetensorsFile {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> CResult<Tensor> {
        let tensor = self.load(name, dev)?.to_dtype(dtype)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            });
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> CResult<Tensor> {
        self.load(name, dev)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tensors_as_candle_wrote_them_and_refuses_a_truncated_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.safetensors");
        let a = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap().reshape((3, 4)).unwrap();
        let b = Tensor::new(&[1.5f32, -2.0], &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
        let map: HashMap<String, Tensor> = [("a".to_string(), a.clone()), ("b".to_string(), b.clone())].into();
        candle_core::safetensors::save(&map, &path).unwrap();

        let file = SafetensorsFile::open(&path).unwrap();
        let read = file.get((3, 4).into(), "a", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(read.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        let read = file.get_unchecked("b", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(read.to_vec1::<f32>().unwrap(), vec![1.5, -2.0]);
        assert!(file.get((4, 3).into(), "a", Init::Const(0.0), DType::F32, &Device::Cpu).is_err());
        assert!(!file.contains_tensor("c"));
        let missing = file.load("c", &Device::Cpu).unwrap_err().to_string();
        assert!(missing.contains("cannot find tensor c"), "{missing}");

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(SafetensorsFile::open(&path).is_err());
    }
}
