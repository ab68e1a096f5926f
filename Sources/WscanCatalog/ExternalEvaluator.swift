import Foundation
import WscanFormats
import WscanAnalysis

/// `--eval 'CMD {ckpt}'`: writes the candidate weights as a safetensors file in a private temporary folder,
/// runs the command through /bin/sh with {ckpt} replaced by that file's (shell-quoted) path, and reads the last
/// number the command prints on stdout. A non-zero exit, a timeout or no number is an error naming the command.
public struct ExternalEvaluator: Evaluator {
    public let command: String
    public let timeout: Double
    public let higherIsBetter: Bool
    public let extra: WeightSet?   // tensors the analysis does not change (biases, norms) written alongside

    public init(command: String, timeout: Double = 600, higherIsBetter: Bool = true, passThrough: WeightSet? = nil) {
        self.command = command; self.timeout = timeout; self.higherIsBetter = higherIsBetter; self.extra = passThrough
    }

    public var description: String { "external command `\(command)`" }

    public func evaluate(_ w: WeightSet) throws -> EvalResult {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wscan-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("candidate.safetensors").path
        let merged = extra.map { $0.merged(with: w) } ?? w
        try SafetensorsWriter.write(merged.entries(), metadata: ["written_by": "wscan evaluator"], to: file)
        let quoted = "'" + file.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let cmd = command.contains("{ckpt}") ? command.replacingOccurrences(of: "{ckpt}", with: quoted) : command + " " + quoted
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", cmd]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err; p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        // Drain both pipes while the command runs so that a chatty command cannot block on a full pipe.
        let outBox = DataBox(), errBox = DataBox()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errBox.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if p.isRunning {
            p.terminate(); Thread.sleep(forTimeInterval: 0.2); if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            throw EvaluatorError("evaluator `\(command)` timed out after \(Int(timeout)) s")
        }
        group.wait()
        p.waitUntilExit()
        let errText = String(decoding: errBox.data, as: UTF8.self)
        let outData = outBox.data
        guard p.terminationStatus == 0 else {
            let last = errText.split(separator: "\n").last.map(String.init) ?? ""
            throw EvaluatorError("evaluator `\(command)` exited with status \(p.terminationStatus)\(last.isEmpty ? "" : ": " + last)")
        }
        let text = String(decoding: outData, as: UTF8.self)
        guard let v = Self.lastNumber(text) else { throw EvaluatorError("evaluator `\(command)` printed no number on stdout") }
        return EvalResult(loss: higherIsBetter ? nil : v, accuracy: nil, metric: v, metricName: "external", higherIsBetter: higherIsBetter)
    }

    /// The last decimal number (int, float or scientific) in the text.
    public static func lastNumber(_ s: String) -> Double? {
        let re = try! NSRegularExpression(pattern: "[-+]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?|[-+]?(?:inf|nan)", options: [.caseInsensitive])
        let ns = s as NSString
        guard let m = re.matches(in: s, range: NSRange(location: 0, length: ns.length)).last else { return nil }
        return Double(ns.substring(with: m.range))
    }
}

final class DataBox: @unchecked Sendable { var data = Data() }
