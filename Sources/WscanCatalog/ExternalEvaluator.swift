import Foundation
import CWscan
import WscanFormats
import WscanAnalysis

/// `--eval 'CMD {ckpt}'`: writes the candidate weights as a safetensors file in a private temporary folder,
/// runs the command through /bin/sh with {ckpt} replaced by that file's (shell-quoted) path (appended as the last
/// argument when the command has no {ckpt}), and reads the result from stdout: the last whitespace-separated word
/// that is a number, allowing `name=`/`name:` before it and brackets, quotes, commas, semicolons or `%` around it
/// ("acc 0.97 (top5)" reads 0.97; "top5" and paths are not numbers). A non-zero exit, a timeout or no number is an
/// error naming the command. The command runs in its own process group: on a timeout, when it finishes (anything
/// it left running in the background), and when wscan is interrupted, the whole group is killed.
public struct ExternalEvaluator: Evaluator {
    public let command: String
    public let timeout: Double
    public let higherIsBetter: Bool
    public let extra: WeightSet?   // tensors the analysis does not change (biases, norms) written alongside
    /// The checkpoint the weights come from: when given, the candidate is that checkpoint with the evaluated tensors
    /// replaced, every other tensor (integer buffers included) copied in its own dtype.
    public let source: Checkpoint?

    public init(command: String, timeout: Double = 600, higherIsBetter: Bool = true, passThrough: WeightSet? = nil,
                source: Checkpoint? = nil) {
        self.command = command; self.timeout = timeout; self.higherIsBetter = higherIsBetter; self.extra = passThrough
        self.source = source
    }

    public var description: String { "external command `\(command)`" }

    public func evaluate(_ w: WeightSet) throws -> EvalResult {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wscan-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("candidate.safetensors").path
        let merged = extra.map { $0.merged(with: w) } ?? w
        if let source {
            let replace = Dictionary(merged.names.map { ($0, merged.values[$0]!) }, uniquingKeysWith: { a, _ in a })
            _ = try Exporter.export(source, to: file, dtype: .keep, include: { _ in true }, replacing: replace,
                                    metadata: ["written_by": "wscan evaluator"])
        } else {
            try SafetensorsWriter.write(merged.entries(), metadata: ["written_by": "wscan evaluator"], to: file)
        }
        let quoted = "'" + file.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let cmd = command.contains("{ckpt}") ? command.replacingOccurrences(of: "{ckpt}", with: quoted) : command + " " + quoted
        let run = try Self.run(cmd, timeout: timeout)
        guard !run.timedOut else { throw EvaluatorError("evaluator `\(command)` timed out after \(Self.seconds(timeout))") }
        guard run.status == 0 else {
            let last = String(decoding: run.stderr, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
            throw EvaluatorError("evaluator `\(command)` \(run.status > 0 ? "exited with status \(run.status)" : "was killed by signal \(-run.status)")\(last.isEmpty ? "" : ": " + last)")
        }
        guard let v = Self.lastNumber(String(decoding: run.stdout, as: UTF8.self)) else {
            throw EvaluatorError("evaluator `\(command)` printed no number on stdout")
        }
        return EvalResult(loss: higherIsBetter ? nil : v, accuracy: nil, metric: v, metricName: "external", higherIsBetter: higherIsBetter)
    }

    static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t)) s" : String(format: "%.3g s", t) }

    struct RunResult { var status: Int32; var timedOut: Bool; var stdout: Data; var stderr: Data }

    /// Runs `/bin/sh -c cmd` in its own process group, draining stdout and stderr while it runs (a chatty command
    /// cannot block on a full pipe). status is the exit code, or minus the signal number.
    static func run(_ cmd: String, timeout: Double) throws -> RunResult {
        var pid: Int32 = 0, outFD: Int32 = -1, errFD: Int32 = -1
        let rc = wscan_spawn_group(cmd, &pid, &outFD, &errFD)
        guard rc == 0 else { throw EvaluatorError("cannot start /bin/sh: \(String(cString: strerror(rc)))") }
        let outBox = DataBox(), errBox = DataBox()
        let group = DispatchGroup()
        for (fd, box) in [(outFD, outBox), (errFD, errBox)] {
            group.enter()
            DispatchQueue.global().async {
                box.data = FileHandle(fileDescriptor: fd, closeOnDealloc: true).readDataToEndOfFile()
                group.leave()
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0, exited = false
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { exited = true; break }
            if Date() >= deadline { break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        // Whatever is left in the group (the whole command on a timeout, background children otherwise) is
        // killed, which also closes the pipes it held.
        wscan_kill_group(pid)
        if !exited { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
        group.wait()
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
        return RunResult(status: code, timedOut: !exited, stdout: outBox.data, stderr: errBox.data)
    }

    /// The evaluator's number: the last word of the output that is one (see the type's documentation).
    public static func lastNumber(_ s: String) -> Double? {
        let strip = CharacterSet(charactersIn: "()[]{}<>\"'`,;%")
        for line in s.split(whereSeparator: \.isNewline).reversed() {
            for word in line.split(whereSeparator: { $0 == " " || $0 == "\t" }).reversed() {
                var w = Substring(word)
                if let i = w.lastIndex(where: { $0 == "=" || $0 == ":" }) { w = w[w.index(after: i)...] }
                let t = String(w).trimmingCharacters(in: strip)
                if let v = number(t) { return v }
            }
        }
        return nil
    }

    static func number(_ t: String) -> Double? {
        let lower = t.lowercased()
        if ["nan", "+nan", "-nan"].contains(lower) { return .nan }
        if ["inf", "+inf", "infinity", "+infinity"].contains(lower) { return .infinity }
        if ["-inf", "-infinity"].contains(lower) { return -.infinity }
        // Digits with an optional sign, point and exponent only: Double("0x1p3") and the like are not numbers here.
        guard !t.isEmpty, t.allSatisfy({ "0123456789+-.eE".contains($0) }), t.contains(where: \.isNumber) else { return nil }
        return Double(t)
    }
}

final class DataBox: @unchecked Sendable { var data = Data() }
