/// Text from checkpoints (names, metadata, reasons) is untrusted: shown to a person, in a terminal or in a file a
/// terminal may print, it must not carry escape sequences.
public enum UntrustedText {
    /// C0 controls other than those in `keep`, DEL and C1 controls replaced by U+FFFD, so that a crafted name cannot
    /// retitle, recolour or move the cursor of a terminal.
    public static func visible(_ s: String, keeping keep: Set<Unicode.Scalar> = ["\n", "\t"]) -> String {
        func control(_ v: Unicode.Scalar) -> Bool { (v.value < 0x20 && !keep.contains(v)) || (0x7F...0x9F).contains(v.value) }
        // (in UTF-8 a C1 control starts with 0xC2: no such byte, no control beyond C0 and DEL)
        guard s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0xC2 }), s.unicodeScalars.contains(where: control) else { return s }
        var out = String.UnicodeScalarView()
        for v in s.unicodeScalars { out.append(control(v) ? "\u{FFFD}" : v) }
        return String(out)
    }
}

/// Human-readable counts: 999,999 → "1.00M", 12,345 → "12.3K", units chosen after rounding (not "1000.0K").
public enum CountFormat {
    public static func format(_ n: Int) -> String {
        let d = Double(n)
        if d >= 999_995_000 { return String(format: "%.2fB", d / 1e9) }
        if d >= 999_950 { return String(format: "%.2fM", d / 1e6) }
        if d >= 1e4 { return String(format: "%.1fK", d / 1e3) }
        return "\(n)"
    }
}

/// Human-readable byte sizes, both ways (binary multiples).
public enum ByteSize {
    /// 1536 → "1.50 KiB".
    public static func format(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), u = 0
        // the unit chosen after rounding: 1,048,480 B is "1.00 MiB", not "1024 KiB"
        while (v >= 1024 || (v >= 1023.5 && u > 0)) && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: v >= 99.95 ? "%.0f %@" : v >= 9.995 ? "%.1f %@" : "%.2f %@", v, units[u])
    }

    /// "512M", "8G", "1.5GiB", "4096" (bytes) → bytes.
    public static func parse(_ s: String) -> Int? {
        // One unit suffix: "16G", "16GB", "16GiB", "512" or "512B" ("1BB" is not a size).
        var t = s.trimmingCharacters(in: .whitespaces).uppercased()
        if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
        let mult: [Character: Double] = ["K": 1024, "M": 1_048_576, "G": 1_073_741_824, "T": 1_099_511_627_776]
        var num = Substring(t), m = 1.0
        if let last = t.last, let f = mult[last] { m = f; num = t.dropLast() }
        // decimal digits only (Double() also reads "0x10", "nan" and "inf")
        guard String(num).range(of: "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$", options: .regularExpression) != nil,
              let v = Double(num), v.isFinite, v >= 0, v * m < 9e18 else { return nil }
        return Int(v * m)
    }
}
