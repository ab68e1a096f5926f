import Foundation
import XCTest
@testable import WscanFormats

enum Paths {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = repo.appendingPathComponent("Tests/Fixtures")
    static let corpus = repo.appendingPathComponent("corpus")
    static let minilm = repo.appendingPathComponent(".cache/minilm/model.safetensors")
    static var wscanBinary: URL {
        for c in [".build/debug/wscan", ".build/release/wscan"] {
            let u = repo.appendingPathComponent(c)
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        return repo.appendingPathComponent(".build/debug/wscan")
    }
}

/// A fresh temporary folder per test, removed afterwards.
final class TempDir {
    let url: URL
    init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("wscan-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let p = path(name)
        try! FileManager.default.createDirectory(atPath: (p as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: p, contents: Data(bytes))
        return p
    }
}

/// Builds safetensors bytes from a raw header string and data, for malformed-input tests.
func safetensorsBytes(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var len = headerLength ?? UInt64(h.count)
    var out = [UInt8]()
    withUnsafeBytes(of: &len) { out += $0 }
    return out + h + data
}

/// Runs a process to completion, draining stdout and stderr concurrently (a full pipe must never block it).
func runProcess(_ exe: URL, _ args: [String], cwd: URL? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    if let cwd { p.currentDirectoryURL = cwd }
    let o = Pipe(), e = Pipe()
    p.standardOutput = o; p.standardError = e
    try p.run()
    let ed = DataBox()
    let drained = DispatchSemaphore(value: 0)
    DispatchQueue.global().async { ed.data = e.fileHandleForReading.readDataToEndOfFile(); drained.signal() }
    let od = o.fileHandleForReading.readDataToEndOfFile()
    drained.wait()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed.data, as: UTF8.self))
}

/// Standard error read on another thread; the semaphore orders the write before the read.
private final class DataBox: @unchecked Sendable { var data = Data() }

func runWscan(_ args: [String], cwd: URL? = nil) throws -> (status: Int32, out: String, err: String) {
    try runProcess(Paths.wscanBinary, args, cwd: cwd)
}

/// Runs a Python snippet (the real numpy/safetensors); returns its standard output, failing on a non-zero exit.
func runPython(_ code: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let r = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", code])
    XCTAssertEqual(r.status, 0, r.err, file: file, line: line)
    return r.out
}

func loadJSON(_ url: URL) throws -> Any { try JSONSerialization.jsonObject(with: Data(contentsOf: url)) }

/// Asserts that `body` throws a FormatError of `kind` whose message contains `contains`.
func assertFormatError(_ kind: FormatError.Kind, _ contains: String = "", file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Any) {
    do {
        _ = try body()
        XCTFail("expected FormatError(\(kind)) but reading succeeded", file: file, line: line)
    } catch let e as FormatError {
        XCTAssertEqual(e.kind, kind, "message: \(e.message)", file: file, line: line)
        if !contains.isEmpty { XCTAssertTrue(e.message.contains(contains), "'\(e.message)' lacks '\(contains)'", file: file, line: line) }
    } catch {
        XCTFail("unexpected error \(error)", file: file, line: line)
    }
}

/// A Python string literal for a path or text (JSON string syntax is valid Python).
func pyStr(_ s: String) -> String {
    String(decoding: try! JSONSerialization.data(withJSONObject: [s], options: .withoutEscapingSlashes), as: UTF8.self).dropFirst().dropLast().description
}

/// `wscan compare A B --json`'s verdict, the command having succeeded.
func compareVerdict(_ a: String, _ b: String, db: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
    let r = try runWscan(["compare", a, b, "--db", db, "--json"])
    XCTAssertEqual(r.status, 0, r.err, file: file, line: line)
    return ((try? JSONSerialization.jsonObject(with: Data(r.out.utf8))) as? [String: Any])?["verdict"] as? [String: Any] ?? [:]
}
