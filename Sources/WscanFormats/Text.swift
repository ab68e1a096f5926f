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
