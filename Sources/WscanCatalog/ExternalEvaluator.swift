import Foundation
import CWscan
import WscanFormats
import WscanAnalysis

/// `--eval 'CMD {ckpt}'`: writes the candidate weights as a safetensors file in a private temporary folder,
/// runs the command through /bin/sh with {ckpt} replaced by that file's (shell-quoted) path (appended as the last
/// argument when the command has no {ckpt}), and reads the result from stdout (`lastNumber`; README, "Evaluators").
/// A non-zero exit, a timeout or no number is an error naming the command. The command runs in its own process
/// group without wscan's other descriptors: on a timeout, when it finishes (anything it left running in the
/// background), and when wscan is interrupted, the whole group is killed (and on interruption the candidate removed).
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
        try evaluate { file in
            let merged = extra.map { $0.merged(with: w) } ?? w
            if let source {
                let replace = Dictionary(merged.names.map { ($0, merged.values[$0]!) }, uniquingKeysWith: { a, _ in a })
                // Weights the source checkpoint lacks (a bias only the other end of a path has) go in as F32.
                let own = Set(source.tensors.map(\.name))
                let adding = merged.names.filter { !own.contains($0) }.map { SafetensorsWriter.Entry(name: $0, shape: merged.shapes[$0]!, floats: merged.values[$0]!) }
                _ = try Exporter.export(source, to: file, dtype: .keep, include: { _ in true }, replacing: replace, adding: adding,
                                        metadata: ["written_by": "wscan evaluator"])
            } else {
                try SafetensorsWriter.write(merged.entries(), metadata: ["written_by": "wscan evaluator"], to: file)
            }
        }
    }

    /// Runs the command on a candidate that `write` puts at the path it is given (a safetensors file): a caller
    /// that streams the weights writes it tensor by tensor instead of handing over a model in memory.
    public func evaluate(writingCandidate write: (String) throws -> Void) throws -> EvalResult {
        let (base, plain) = Self.temporaryFolder()
        let dir = URL(fileURLWithPath: base).appendingPathComponent("wscan-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("candidate.safetensors").path
        // Guarded from here: an interruption while the candidate is written (most of the time for a large model)
        // removes it, the writer's temporary file and the folder.
        wscan_guard_paths(file, dir.path)
        defer { wscan_guard_paths(nil, nil) }
        try write(file)
        // A plain path goes in as it is; only when no writable plain folder exists is it single-quoted (then
        // `"{ckpt}"` inside other quotes is the user's to get right, as before).
        let cmd = plain ? Self.substitute(command, path: file) : Self.substitute(command, path: "'" + file.replacingOccurrences(of: "'", with: "'\\''") + "'")
        let run = try Self.run(cmd, timeout: timeout)
        guard !run.timedOut else { throw EvaluatorError("evaluator `\(command)` timed out after \(Self.seconds(timeout))") }
        guard run.statusKnown else { throw EvaluatorError("evaluator `\(command)`: its exit status could not be read") }
        guard run.status == 0 else {
            // The last line it wrote, on stderr, else on stdout.
            let last = [run.stderr, run.stdout].lazy.compactMap { String(decoding: $0, as: UTF8.self).split(whereSeparator: \.isNewline).last.map(String.init) }.first ?? ""
            throw EvaluatorError("evaluator `\(command)` \(run.status > 0 ? "exited with status \(run.status)" : "was killed by signal \(-run.status)")\(last.isEmpty ? "" : ": " + last)")
        }
        // The candidate's path (a random folder name full of digits) never counts, whichever pass reads the number.
        let text = String(decoding: run.stdout, as: UTF8.self)
            .replacingOccurrences(of: file, with: " ").replacingOccurrences(of: dir.path, with: " ")
        guard let v = Self.lastNumber(text) else {
            let last = text.split(whereSeparator: \.isNewline).last.map { " (last line: \(String($0.prefix(120))))" } ?? ""
            throw EvaluatorError("evaluator `\(command)` printed no number on stdout\(last)")
        }
        return EvalResult(loss: higherIsBetter ? nil : v, accuracy: nil, metric: v, metricName: "external", higherIsBetter: higherIsBetter)
    }

    /// The command with each {ckpt} replaced by the path as it is (appended as the last argument when there is no
    /// {ckpt}). The path needs no quoting in any shell context: it is made only of characters no shell treats
    /// specially (`temporaryFolder`), so `{ckpt}`, `"{ckpt}"`, `'{ckpt}'`, `"--ckpt={ckpt}"`, `"$(realpath {ckpt})"`
    /// and `sh -c "… \"{ckpt}\""` all hand the command the same path.
    static func substitute(_ command: String, path: String) -> String {
        command.contains("{ckpt}") ? command.replacingOccurrences(of: "{ckpt}", with: path) : command + " " + path
    }

    /// Whether a path has only characters no shell context treats specially (letters, digits, / . _ - + , : @ %).
    static func shellInert(_ p: String) -> Bool {
        p.unicodeScalars.allSatisfy { c in c.isASCII && (CharacterSet.alphanumerics.contains(c) || "/._-+,:@%".unicodeScalars.contains(c)) }
    }

    /// $TMPDIR when it is set, writable and shell-inert, else /tmp when writable, else $TMPDIR as it is (with
    /// `plain` false: the path must then be quoted). The candidate's folder name adds only a UUID.
    static func temporaryFolder() -> (path: String, plain: Bool) {
        let env = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 }
        let t = env.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 } ?? "/tmp"
        if shellInert(t), access(t, W_OK) == 0 { return (t, true) }
        if access("/tmp", W_OK) == 0 { return ("/tmp", true) }
        return (t, shellInert(t))
    }

    static func seconds(_ t: Double) -> String { t == t.rounded() ? "\(Int(t)) s" : String(format: "%.3g s", t) }

    struct RunResult { var status: Int32; var timedOut: Bool; var statusKnown: Bool; var stdout: Data; var stderr: Data }

    /// Runs `/bin/sh -c cmd` in its own process group, draining stdout and stderr while it runs (a chatty command
    /// cannot block on a full pipe). status is the exit code, or minus the signal number. After the shell exits (or
    /// is killed at the deadline) the group is killed and the pipes are drained for at most 2 s more: a descendant
    /// that left the group (setsid) and still holds them cannot stretch the timeout.
    static func run(_ cmd: String, timeout: Double) throws -> RunResult {
        var pid: Int32 = 0, outFD: Int32 = -1, errFD: Int32 = -1
        let rc = wscan_spawn_group(cmd, &pid, &outFD, &errFD)
        guard rc == 0 else { throw EvaluatorError("cannot start /bin/sh: \(String(cString: strerror(rc)))") }
        var fds = [outFD, errFD], data = [Data(), Data()]
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        func drain(_ ms: Int32) {
            var p = fds.enumerated().filter { $0.element >= 0 }.map { pollfd(fd: $0.element, events: Int16(POLLIN), revents: 0) }
            guard !p.isEmpty, poll(&p, nfds_t(p.count), ms) > 0 else { if p.isEmpty { usleep(UInt32(ms) * 1000) }; return }
            for q in p where q.revents != 0 {
                let i = fds.firstIndex(of: q.fd)!
                let n = buf.withUnsafeMutableBytes { read(q.fd, $0.baseAddress, $0.count) }
                if n > 0 { data[i].append(contentsOf: buf[0..<n]) } else if n == 0 || (errno != EINTR && errno != EAGAIN) { close(q.fd); fds[i] = -1 }
            }
        }
        let deadline = Date().addingTimeInterval(timeout)
        var status: Int32 = 0, exited = false, known = true
        while !exited && Date() < deadline {
            drain(10)
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { exited = true } else if r < 0 && errno != EINTR { exited = true; known = false }
        }
        // Whatever is left in the group (the whole command on a timeout, background children otherwise) is killed.
        wscan_kill_group(pid)
        if !exited { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
        let grace = Date().addingTimeInterval(2)
        while fds.contains(where: { $0 >= 0 }) && Date() < grace { drain(20) }
        for fd in fds where fd >= 0 { close(fd) }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
        return RunResult(status: code, timedOut: !exited, statusKnown: known, stdout: data[0], stderr: data[1])
    }

    /// The evaluator's number (see the type's documentation): ANSI colour codes removed, then the last word that is
    /// a whole number; failing that, the last number inside a word (`tensor(0.9700)`, `np.float64(0.97)`).
    public static func lastNumber(_ s: String) -> Double? {
        let plain = s.replacingOccurrences(of: "\u{1B}\\[[0-9;?]*[A-Za-z]", with: "", options: .regularExpression)
        let strip = CharacterSet(charactersIn: "()[]{}<>\"'`,;%")
        let words = plain.split(whereSeparator: \.isNewline).flatMap { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }
        for word in words.reversed() {
            var w = Substring(word)
            if let i = w.lastIndex(where: { $0 == "=" || $0 == ":" }) { w = w[w.index(after: i)...] }
            var t = String(w).trimmingCharacters(in: strip)
            if t.hasSuffix("."), t.dropLast().contains(where: \.isNumber) { t.removeLast() }   // end of a sentence
            if let v = number(t.trimmingCharacters(in: strip)) { return v }
        }
        let re = try! NSRegularExpression(pattern: "[-+]?(?:\\d{1,3}(?:,\\d{3})+(?:\\.\\d*)?|\\d+\\.?\\d*|\\.\\d+)(?:[eE][-+]?\\d+)?")
        for word in words.reversed() {
            let ns = String(word) as NSString
            if let m = re.matches(in: String(word), range: NSRange(location: 0, length: ns.length)).last {
                return Double(ns.substring(with: m.range).replacingOccurrences(of: ",", with: ""))
            }
        }
        return nil
    }

    static func number(_ t: String) -> Double? {
        let lower = t.lowercased()
        if ["nan", "+nan", "-nan"].contains(lower) { return .nan }
        if ["inf", "+inf", "infinity", "+infinity"].contains(lower) { return .infinity }
        if ["-inf", "-infinity"].contains(lower) { return -.infinity }
        // Thousands grouped by commas ("1,234.5", as a locale-aware print writes it) are one number.
        if t.range(of: "^[-+]?\\d{1,3}(,\\d{3})+(\\.\\d*)?([eE][-+]?\\d+)?$", options: .regularExpression) != nil {
            return Double(t.replacingOccurrences(of: ",", with: ""))
        }
        // Digits with an optional sign, point and exponent only: Double("0x1p3") and the like are not numbers here.
        guard !t.isEmpty, t.allSatisfy({ "0123456789+-.eE".contains($0) }), t.contains(where: \.isNumber) else { return nil }
        return Double(t)
    }
}

