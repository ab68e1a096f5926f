import WscanKernels
import WscanFormats
import Foundation

/// Per-tensor summary recorded in the catalog: statistics over decoded values and a content hash of the
/// stored bytes (XXH3-128).
public struct TensorSummary: Sendable {
    public var stats: TensorStats?
    public var hash: String
    public var note: String?
}

public enum Summarizer {
    /// What a non-contiguous layout, or big-endian storage, adds to the content hash (nil for little-endian row-major
    /// tensors): the same bytes read big-endian are other values, and must not hash alike (a false duplicate).
    static func layoutTag(_ t: TensorInfo) -> [UInt8]? {
        var tag: String
        switch t.layout {
        case .contiguous: tag = ""
        case .fortran: tag = "layout fortran \(t.shape)"
        case let .strided(strides, offset): tag = "layout strided \(t.shape) \(strides) \(offset)"
        }
        if t.bigEndian { tag += (tag.isEmpty ? "" : " ") + "big-endian" }
        return tag.isEmpty ? nil : Array(tag.utf8)
    }

    /// The content hash alone: the stored bytes, then the layout of a view.
    static func storedHash(_ raw: UnsafeRawBufferPointer, _ t: TensorInfo) -> String {
        let h = XXH3Hasher()
        if let b = raw.baseAddress { h.update(b, raw.count) }
        if let tag = layoutTag(t) { tag.withUnsafeBytes { h.update($0.baseAddress!, $0.count) } }
        return h.hex()
    }

    /// Statistics and hash for one tensor. Undecodable tensors get a hash and a note, no statistics.
    public static func summarize(_ ck: Checkpoint, _ t: TensorInfo) -> TensorSummary {
        let raw = ck.bytes(of: t)
        guard t.dtype.decodable else {
            return TensorSummary(stats: nil, hash: storedHash(raw, t), note: t.note ?? "no decoder for \(t.dtype.rawValue)")
        }
        let hasher = XXH3Hasher()
        var st = TensorStats()
        let fast = t.dtype == .f32 && !t.bigEndian
        let contiguousBF16 = t.dtype == .bf16 && !t.bigEndian
        // A strided view that does not cover its storage run exactly (a slice, a step): statistics over the view's
        // own elements (gathered), the hash over the stored run plus the layout.
        var partialView = false
        if case let .strided(strides, offset) = t.layout,
           !TensorData.isPermutation(shape: t.shape, strides: strides, offset: offset, stored: TensorData.storedElements(t)) {
            partialView = true
        }
        do {
            if partialView {
                if let b = raw.baseAddress { hasher.update(b, raw.count) }
                let v = try TensorData.floats(ck, t)
                v.withUnsafeBufferPointer { if let p = $0.baseAddress { StatsKernel.accumulate(p, $0.count, into: &st) } }
            } else if contiguousBF16 || fast, let base = raw.baseAddress {
                // F32 straight from the map, BF16 widened block by block inside the statistics kernel; the
                // content hash runs on the same cache-hot chunk.
                let width = fast ? 4 : 2
                let step = TensorData.chunkElements
                let total = raw.count / width
                var i = 0
                while i < total {
                    let n = min(step, total - i)
                    let p = base + i * width
                    hasher.update(p, n * width)
                    if fast { StatsKernel.accumulate(p.assumingMemoryBound(to: Float.self), n, into: &st) }
                    else { StatsKernel.accumulateBF16(p, n, into: &st) }
                    i += n
                }
                if raw.count % width != 0 { hasher.update(base + total * width, raw.count % width) }
            } else {
                var consumed = 0
                let bytesPerChunk: (Int) -> Int = { n in
                    if let b = t.dtype.block { return n / b.elements * b.bytes }
                    return n * (t.dtype.bits ?? 8) / 8
                }
                try TensorData.forEachChunk(ck, t, chunk: StatsKernel.blockElements * 2) { chunk in
                    let nElem = chunk.count / TensorData.lanes(t.dtype)
                    let nb = min(bytesPerChunk(nElem), raw.count - consumed)
                    if nb > 0, let b = raw.baseAddress { hasher.update(b + consumed, nb) }
                    consumed += nb
                    StatsKernel.accumulate(chunk.baseAddress!, chunk.count, into: &st)
                }
                if consumed < raw.count, let b = raw.baseAddress { hasher.update(b + consumed, raw.count - consumed) }
            }
        } catch {
            return TensorSummary(stats: nil, hash: storedHash(raw, t), note: "\(error)")
        }
        // The hash covers the stored bytes; a view reads them in another order (a Fortran-ordered array, a torch
        // transpose or slice), so its layout goes into the hash too: a matrix and its transpose, or two views of
        // one storage, never hash alike. (A C-ordered and a Fortran-ordered copy of one matrix then differ too.)
        if let tag = layoutTag(t) { tag.withUnsafeBytes { hasher.update($0.baseAddress!, $0.count) } }
        return TensorSummary(stats: st, hash: hasher.hex(), note: nil)
    }

    /// Summaries for all tensors, in parallel over tensors on all cores.
    public static func summarizeAll(_ ck: Checkpoint, progress: (@Sendable (Int) -> Void)? = nil) -> [TensorSummary] {
        let n = ck.tensors.count
        let out = UnsafeMutableBufferPointer<TensorSummary?>.allocate(capacity: n)
        out.initialize(repeating: nil)
        defer { out.deallocate() }
        // Largest first so that the two cores finish together.
        let order = ck.tensors.indices.sorted { ck.tensors[$0].byteCount > ck.tensors[$1].byteCount }
        let next = AtomicCounter()
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, n))
        let outPtr = UnsafeSendable(out)
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                let k = next.next()
                if k >= n { break }
                let i = order[k]
                outPtr.value[i] = summarize(ck, ck.tensors[i])
                progress?(ck.tensors[i].byteCount)
            }
        }
        return out.map { $0! }
    }
}

final class AtomicCounter: @unchecked Sendable {
    private var v = 0
    private let lock = NSLock()
    func next() -> Int { lock.lock(); defer { lock.unlock() }; let r = v; v += 1; return r }
}

struct UnsafeSendable<T>: @unchecked Sendable { let value: T; init(_ v: T) { value = v } }
