import Foundation

enum JSONLimits {
    static let maxDepth = 64
}

/// Parses untrusted JSON bytes: must be valid UTF-8, nesting no deeper than `maxDepth` (checked by a
/// byte scan before Foundation sees it), and a top-level object.
func parseJSONObject(_ bytes: UnsafeRawBufferPointer, what: String) throws -> [String: Any] {
    guard String(validating: bytes.bindMemory(to: UInt8.self), as: UTF8.self) != nil else {
        throw FormatError(.json, "\(what) is not valid UTF-8")
    }
    var depth = 0, inString = false, escape = false
    for b in bytes {
        if inString {
            if escape { escape = false } else if b == 0x5C { escape = true } else if b == 0x22 { inString = false }
            continue
        }
        switch b {
        case 0x22: inString = true
        case 0x7B, 0x5B:
            depth += 1
            if depth > JSONLimits.maxDepth { throw FormatError(.json, "\(what) nests deeper than \(JSONLimits.maxDepth)") }
        case 0x7D, 0x5D: depth -= 1
        default: break
        }
    }
    let obj: Any
    do { obj = try JSONSerialization.jsonObject(with: Data(bytes), options: []) } catch {
        throw FormatError(.json, "\(what) is not valid JSON")
    }
    guard let dict = obj as? [String: Any] else { throw FormatError(.json, "\(what) is not a JSON object") }
    return dict
}

/// A parsed JSON value as it was written (`true`, not "1").
func jsonLiteral(_ v: Any) -> String {
    if let n = v as? NSNumber, String(cString: n.objCType) == "c" { return n.boolValue ? "true" : "false" }
    return "\(v)"
}

/// A JSON integer literal as a non-negative Int: `true`, `2.0`, `8e0`, fractions, negatives and out-of-range values
/// give nil, as in the reference implementation (serde's u64).
func jsonInt(_ v: Any?) -> Int? {
    // `v is Bool` also holds for the numbers 0 and 1; JSON's true and false come as the boolean class, whose
    // objCType is "c", and fractional or exponent literals as "d".
    guard let n = v as? NSNumber else { return nil }
    let type = String(cString: n.objCType)
    guard type != "d", type != "f", type != "c", type != "B" else { return nil }
    let d = n.doubleValue
    guard d.isFinite, d >= 0, d == d.rounded(), d < 9.2e18 else { return nil }
    let i = n.int64Value
    return i >= 0 ? Int(i) : nil
}
