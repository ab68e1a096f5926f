// libFuzzer entry point: every input is written to a scratch file under one of the names wscan recognises (the
// first byte picks the extension) and opened exactly as `wscan index` opens a checkpoint: detection, the reader,
// the passive pickle scan, then every tensor's elements decoded. Errors are the expected outcome for almost every
// input; a crash, a sanitizer report or a hang is a bug.
import Foundation
import WscanFormats

private let extensions = ["safetensors", "gguf", "npy", "npz", "pt", "pkl", "bin", "json"]
private let dir: String = {
    let d = NSTemporaryDirectory() + "wscan-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let ext = extensions[Int(data[0]) % extensions.count]
    let path = dir + "/input." + ext
    let body = Data(bytes: data + 1, count: size - 1)
    guard FileManager.default.createFile(atPath: path, contents: body) else { return 0 }
    defer { unlink(path) }
    guard let ck = try? CheckpointOpener.open(path) else { return 0 }
    var budget = 1 << 22                         // decode at most 4M elements per input (claimed sizes may be huge)
    for t in ck.tensors where t.dtype.decodable {
        let n = TensorData.storedElements(t)
        guard n <= budget else { continue }
        budget -= n
        _ = try? TensorData.forEachChunk(ck, t) { chunk in _ = chunk.reduce(0, +) }
        if t.elementCount <= 1 << 20 { _ = try? TensorData.floats(ck, t) }
    }
    return 0
}

// SwiftPM links an executable's entry point as `<module>_main`, which stands in for libFuzzer's own main: hand
// over to libFuzzer's driver with the command line.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(_ argc: UnsafeMutablePointer<CInt>,
                       _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                       _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("FuzzReaders_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc
    var v = argv
    return runDriver(&c, &v) { data, size in fuzzOne(data, size) }
}
