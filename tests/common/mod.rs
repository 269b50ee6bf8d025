//! Helpers shared by the integration tests (each test file includes this with `mod common;`).

/// The safetensors `bytes` of a detector checkpoint with its `params` metadata (the JSON record)
/// edited by `edit`; the tensors are kept as they are.
pub fn edit_checkpoint_params(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    // [8-byte little-endian header length][JSON header][tensor data]
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut params: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["params"].as_str().unwrap()).unwrap();
    edit(&mut params);
    header["__metadata__"]["params"] = serde_json::Value::from(params.to_string());
    let json = header.to_string().into_bytes();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}
