//! The in-band error frame: for any message and any cut tail, an NDJSON error is exactly one
//! parseable line after the cut, and an SSE error is one whole `data:` event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rawrxd::edge::wire::Framing;

fuzz_target!(|input: (String, Vec<u8>)| {
    let (message, tail) = input;
    let tail = &tail[tail.len().saturating_sub(2)..];
    let line = Framing::Ndjson.inband_error(&message, tail).unwrap();
    assert!(line.ends_with(b"\n"));
    let text = std::str::from_utf8(&line).unwrap();
    let json_line = text.trim_start_matches('\n').trim_end_matches('\n');
    assert!(!json_line.contains('\n'));
    let value: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(value["error"].as_str(), Some(message.as_str()));

    let event = Framing::Sse.inband_error(&message, tail).unwrap();
    let text = std::str::from_utf8(&event).unwrap();
    let data = text.trim_start_matches('\n').strip_prefix("data: ").unwrap();
    let data = data.strip_suffix("\n\n").unwrap();
    let value: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(value["error"]["message"].as_str(), Some(message.as_str()));
});
