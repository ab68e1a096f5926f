import ArgumentParser
import Foundation
import WscanFormats
import WscanCatalog

struct Scan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Safety verdict for every pickle-bearing file (torch .pt/.pth/.bin/.ckpt, .pkl, .joblib, object arrays).",
        discussion: """
        Pickles are disassembled by a passive parser; nothing is imported or executed. Every import (GLOBAL, \
        STACK_GLOBAL, INST, OBJ) and what REDUCE/BUILD/NEWOBJ call is classified: allowed, dangerous or unknown. \
        Exit status: 0 all clean, 1 findings (low or above), 2 a file could not be read.
        """)
    @Argument(help: "Files or folders (folders are walked recursively).") var paths: [String]
    @Flag(help: "Machine-readable JSON output.") var json = false
    @Flag(help: "Also list informational findings.") var verbose = false

    func validate() throws { if paths.isEmpty { throw ValidationError("give at least one file or folder") } }

    func run() throws {
        var files: [String] = []
        var missing: [(String, String)] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { missing.append((p, "no such file or folder")); continue }
            if isDir.boolValue {
                let (c, _, unlisted, _) = CheckpointOpener.discover([p])
                files += c.filter { !$0.hasSuffix(".index.json") }
                missing += unlisted.map { ($0.path, $0.reason) }    // a folder we cannot list may hide anything
            } else { files.append(p) }
        }
        struct Result: Encodable {
            var path: String; var verdict: String; var worst: String?; var findings: [Finding]; var error: String?
            var note: String? = nil
        }
        var results: [Result] = missing.map { Result(path: $0.0, verdict: "error", worst: nil, findings: [], error: $0.1) }
        for f in files {
            do {
                let fs = try PickleScanner.scanFile(path: f).filter { verbose || $0.severity > .info }
                let w = PickleScanner.worst(fs)
                let verdict = w == nil ? "clean" : (w! >= .high ? "dangerous" : "suspicious")
                // What "clean" rests on: a format with no code in it, or bytes that were scanned as a pickle.
                var note: String? = nil
                if w == nil {
                    switch FormatDetector.sniffContent(path: f) {
                    case let kind where kind == .safetensors || kind == .gguf: note = "\(kind.rawValue): tensors and metadata only, nothing to unpickle"
                    case .unknown, .lfsPointer: note = "not a checkpoint format wscan recognises; scanned as bytes a loader might unpickle: nothing imports"
                    default: break
                    }
                }
                results.append(Result(path: f, verdict: verdict, worst: w?.rawValue, findings: fs, error: nil, note: note))
            } catch {
                results.append(Result(path: f, verdict: "error", worst: nil, findings: [], error: (error as? FormatError)?.message ?? "\(error)"))
            }
        }
        if json { print(Fmt.json(results)) } else {
            for r in results {
                if let e = r.error { printErr("wscan: \(r.path): \(e)"); continue }
                print("\(r.verdict.uppercased().padding(toLength: 10, withPad: " ", startingAt: 0)) \(Fmt.field(r.path))"
                      + (r.note.map { "  (\($0))" } ?? ""))
                for f in r.findings {
                    print(Fmt.field("    [\(f.severity.rawValue)] \(f.member) @\(f.offset): \(f.what)\(f.detail.isEmpty ? "" : " — " + f.detail)"))
                }
            }
            let bad = results.filter { $0.verdict == "dangerous" || $0.verdict == "suspicious" }.count
            print("\(results.count) files scanned: \(results.filter { $0.verdict == "clean" }.count) clean, \(bad) flagged, \(results.filter { $0.error != nil }.count) unreadable")
        }
        if results.contains(where: { $0.error != nil }) { throw ExitCode(2) }
        if results.contains(where: { !$0.findings.isEmpty }) { throw ExitCode(1) }
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write any readable checkpoint (torch, GGUF dequantized, npz, sharded) as one safetensors file.",
        discussion: """
        Exit status 1 when tensors had to be left out (types without a decoder); the file holds the others.
        --dtype keep copies tensors whose type safetensors has, byte for byte; others (GGUF block types, strided \
        views, big-endian arrays) are decoded to F32 and listed. F32/F16/BF16 convert every floating-point tensor \
        (BF16 rounds to nearest even). The output is written beside the target and renamed into place; wscan \
        refuses to write over any of the checkpoint's own files.
        """)
    @OptionGroup var catalog: CatalogOptions
    @Argument(help: "Catalog id, name, or a path.") var checkpoint: String
    @Option(name: .long, help: "Output .safetensors file.") var to: String
    @Option(help: "Only tensors matching these shell globs (comma-separated).") var tensors: String?
    @Option(help: "keep | F32 | F16 | BF16") var dtype: String = "keep"
    @Flag(help: "Read pickles the scanner flags (still executes nothing).") var trust = false

    func run() throws {
        guard let target = Exporter.TargetDType.allCases.first(where: { $0.rawValue.lowercased() == dtype.lowercased() }) else {
            throw ValidationError("--dtype must be keep, F32, F16 or BF16")
        }
        let path: String
        if FileManager.default.fileExists(atPath: checkpoint) { path = try checkpointFile(checkpoint) } else {
            path = try catalog.open().resolve(checkpoint).path
        }
        let ck = try withInput(path, trust: trust) { $0 }
        try catalog.refuseCatalogAsOutput(to)
        guard ck.tensors.contains(where: { SpectrumRunner.globMatch(tensors, $0.name) }) else {
            throw CLIError("\(path): no tensor matches \(tensors ?? "*")")
        }
        let rep: Exporter.Report
        do {
            rep = try Exporter.export(ck, to: to, dtype: target, include: { SpectrumRunner.globMatch(tensors, $0.name) },
                                      metadata: ["exported_by": "wscan", "source_format": ck.format.rawValue])
        } catch let e as FormatError { throw CLIError("\(path): \(e.message)") }
        if catalog.json {
            struct Out: Encodable { var output: String; var tensors: Int; var bytes: Int; var converted: [String: String]; var skipped: [String: String] }
            print(Fmt.json(Out(output: to, tensors: rep.tensors, bytes: rep.bytes, converted: rep.converted, skipped: rep.skipped)))
        } else {
            print("wrote \(to): \(rep.tensors) tensors, \(Fmt.bytes(rep.bytes))")
            if !rep.converted.isEmpty {
                print("written otherwise than stored (converted, or made contiguous / little-endian in their own type): \(rep.converted.count) tensors")
                let conv = rep.converted.sorted { $0.key < $1.key }
                for (n, c) in conv.prefix(20) { print("  \(Fmt.field(n))  \(c)") }
                if conv.count > 20 { print("  … \(conv.count - 20) more (--json lists all)") }
            }
            for (n, why) in rep.skipped.sorted(by: { $0.key < $1.key }) { printErr("wscan: skipped \(n): \(why)") }
        }
        // An export that left tensors out is incomplete: exit 1, as for any input that could not be read in full.
        if !rep.skipped.isEmpty {
            if !catalog.json { printErr("wscan: \(to) is incomplete: \(rep.skipped.count) tensors left out") }
            throw ExitCode(1)
        }
    }
}
