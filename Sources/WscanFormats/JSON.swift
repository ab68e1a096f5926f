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

/// A JSON number as an exact non-negative Int (fractions, negatives and out-of-range values give nil).
func jsonInt(_ v: Any?) -> Int? {
    guard let n = v as? NSNumber else { return nil }
    let d = n.doubleValue
    guard d.isFinite, d >= 0, d == d.rounded(), d < 9.2e18 else { return nil }
    let i = n.int64Value
    return i >= 0 ? Int(i) : nil
}
