import Foundation
import CWscan

/// Writes safetensors files: sorted names, 8-byte-aligned header, tensors tiled in name order. Writes to a
/// temporary file beside the target and renames it into place, so a reader never sees a half-written file.
/// Never used on a path that is a catalogued input: callers pass output paths only.
public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        /// The tensor's bytes, or the count a `produce` closure will hand the writer.
        public var byteCount: Int
        /// Eager bytes (empty for a lazy entry).
        public var bytes: [UInt8]
        /// A lazy entry's bytes: called once, while the file is written, with a sink taking them in one or more
        /// pieces, so a writer of a large model holds one tensor (or one piece of it) at a time, not the model.
        public var produce: (@Sendable (_ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void)?

        public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes; byteCount = bytes.count; produce = nil
        }
        public init(name: String, shape: [Int], floats: [Float]) {
            self.init(name: name, dtype: .f32, shape: shape, bytes: floats.withUnsafeBytes { Array($0) })
        }
        public init(name: String, dtype: DType, shape: [Int], byteCount: Int,
                    produce: @escaping @Sendable (_ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = []; self.byteCount = byteCount; self.produce = produce
        }
    }

    public static func write(_ entries: [Entry], metadata: [String: String] = [:], to path: String) throws {
        var seen = Set<String>()
        var header: [(String, String)] = []
        var offset = 0
        let sorted = entries.sorted { $0.name < $1.name }
        for e in sorted {
            guard seen.insert(e.name).inserted else { throw FormatError(.duplicate, "duplicate tensor name '\(e.name)'") }
            guard let n = elementCount(e.shape), e.dtype.byteCount(elements: n) == e.byteCount else {
                throw FormatError(.layout, "tensor '\(e.name)': \(e.byteCount) bytes do not match shape \(e.shape) \(e.dtype.rawValue)")
            }
            let shape = e.shape.map(String.init).joined(separator: ",")
            header.append((e.name, "{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + e.byteCount)]}"))
            offset += e.byteCount
        }
        var json = "{"
        if !metadata.isEmpty {
            json += "\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }.map { "\(quote($0.key)):\(quote($0.value))" }.joined(separator: ",") + "}"
            if !header.isEmpty { json += "," }
        }
        json += header.map { "\(quote($0.0)):\($0.1)" }.joined(separator: ",") + "}"
        var h = Array(json.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var len = UInt64(h.count).littleEndian
        // Written beside the target and renamed over it, so a reader never sees half a file. Failures say why.
        // Tensors are written one after another as they are produced: nothing holds the whole file.
        let tmp = path + ".tmp-\(getpid())"
        func reason() -> String { String(cString: strerror(errno)).lowercased() }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FormatError(.io, "cannot write \(path): \(reason())") }
        // removed by the interrupt handler if a signal ends the process while it is written
        wscan_guard_writer_tmp(tmp)
        defer { wscan_guard_writer_tmp(nil) }
        struct WriteFailed: Error { let why: String; var code: Int32 = 0 }
        func put(_ b: UnsafeRawBufferPointer) throws {
            var done = 0
            while done < b.count {
                let n = Glibc.write(fd, b.baseAddress! + done, b.count - done)
                if n < 0 { if errno == EINTR { continue }; throw WriteFailed(why: reason(), code: errno) }
                done += n
            }
        }
        do {
            try withUnsafeBytes(of: &len) { try put($0) }
            try h.withUnsafeBytes { try put($0) }
            for e in sorted {
                guard let produce = e.produce else { try e.bytes.withUnsafeBytes { try put($0) }; continue }
                var written = 0
                try produce { piece in
                    written += piece.count
                    guard written <= e.byteCount else { throw FormatError(.layout, "tensor '\(e.name)': produced more than its \(e.byteCount) bytes") }
                    try put(piece)
                }
                guard written == e.byteCount else { throw FormatError(.layout, "tensor '\(e.name)': produced \(written) of its \(e.byteCount) bytes") }
            }
        } catch let w as WriteFailed {
            close(fd); unlink(tmp)
            // A write from a mapped source that shrank meanwhile fails with EFAULT: say what happened.
            if let f = MappedFiles.shrunk() { throw FormatError(.io, "not writing \(path): \(f): \(MappedFiles.shrankReason)") }
            if w.code == EFAULT {                   // the kernel could not read the mapped source pages
                throw FormatError(.io, "not writing \(path): a source file shrank while it was being read (changed by another process)")
            }
            throw FormatError(.io, "cannot write \(path): \(w.why)")
        } catch {
            close(fd); unlink(tmp); throw error
        }
        if close(fd) != 0 { let why = reason(); unlink(tmp); throw FormatError(.io, "cannot write \(path): \(why)") }
        // A source file that shrank while it was read (SIGBUS turned into zero pages) makes this output wrong: it is
        // not put in place.
        if let f = MappedFiles.shrunk() { unlink(tmp); throw FormatError(.io, "not writing \(path): \(f): \(MappedFiles.shrankReason)") }
        if rename(tmp, path) != 0 { let why = reason(); unlink(tmp); throw FormatError(.io, "cannot write \(path): \(why)") }
    }

    static func quote(_ s: String) -> String {
        var o = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": o += "\\\""
            case "\\": o += "\\\\"
            case "\n": o += "\\n"
            case "\r": o += "\\r"
            case "\t": o += "\\t"
            default:
                if u.value < 0x20 { o += String(format: "\\u%04x", u.value) } else { o.unicodeScalars.append(u) }
            }
        }
        return o + "\""
    }
}
