import ArgumentParser
import CWscan
import Foundation
import WscanKernels
import WscanFormats
import WscanCatalog
import WscanAnalysis

// OpenBLAS is loaded on first use (CWscan), after OPENBLAS_CORETYPE is chosen from the CPU flags.
guard CPU.supportsKernels else {
    printErr("wscan: this CPU lacks AVX2/FMA/F16C (x86-64-v3), which wscan's kernels are built for")
    exit(3)
}
setvbuf(stdout, nil, _IOFBF, 1 << 16)
wscan_tune_malloc()   // large temporary buffers come from a reused heap, not fresh zeroed pages
wscan_install_interrupt_handler()

// `wscan help NAME…` and `wscan NAME… --help` print the root help for a name that is no command (ArgumentParser's
// behaviour): a usage error. Names are walked while the command has subcommands; then come its arguments.
func unknownHelpTopic(_ argv: [String]) -> String? {
    let names: ArraySlice<String>
    if argv.first == "help" { names = argv.dropFirst().prefix { !$0.hasPrefix("-") } }
    else if argv.contains("--help") || argv.contains("-h") { names = argv.filter { !$0.hasPrefix("-") }[...] }   // `wscan -h nosuch` too
    else { return nil }
    var cmd: ParsableCommand.Type = Wscan.self
    var path = "wscan"
    for name in names {
        let subs: [ParsableCommand.Type] = cmd.configuration.subcommands
        if subs.isEmpty { break }                     // the rest are the command's own arguments
        var found: ParsableCommand.Type? = nil
        for s in subs where s._commandName == name { found = s }
        guard let sub = found else {
            if cmd == Wscan.self && name == "help" { break }      // `wscan help help`
            let known = subs.filter { $0.configuration.shouldDisplay }.map { $0._commandName }.joined(separator: ", ")
            return "wscan: '\(path)' has no command '\(name)'" + (known.isEmpty ? "" : " (commands: \(known))")
        }
        cmd = sub
        path += " " + name
    }
    return nil
}
// Arguments (and $WSCAN_DB) reach the commands as Swift strings, where bytes that are not UTF-8 become U+FFFD: a
// path with such bytes would name another file (a catalog or an output written next to the one meant). Refused.
for i in 1..<Int(CommandLine.argc) {
    if let p = CommandLine.unsafeArgv[i], String(validatingCString: p) == nil {
        printErr("wscan: argument \(i) is not valid UTF-8 (a file name? wscan takes UTF-8 paths only: rename it)")
        exit(2)
    }
}
if let p = getenv("WSCAN_DB"), String(validatingCString: p) == nil,
   !CommandLine.arguments.contains(where: { $0 == "--db" || $0.hasPrefix("--db=") || $0 == "-h" || $0 == "--help" || $0 == "help" }) {
    printErr("wscan: $WSCAN_DB is not valid UTF-8 (wscan takes UTF-8 paths only)")
    exit(2)
}
if let message = unknownHelpTopic(Array(CommandLine.arguments.dropFirst())) {
    printErr(message)
    exit(2)
}

var command: ParsableCommand
do {
    command = try Wscan.parseAsRoot()
} catch {
    if Wscan.exitCode(for: error) == .success { Wscan.exit(withError: error) } // --help, --version
    printErr(Wscan.fullMessage(for: error), multiline: true)
    exit(2) // usage error
}
/// A mapped checkpoint that another process truncated while wscan read it (MappedFiles): whatever the command printed
/// was computed over zero pages. `index` handles this per file (the file fails, the run goes on) and takes the count.
func exitIfShrunk() {
    if let f = MappedFiles.shrunk(take: true) {
        fflush(stdout)
        printErr("wscan: \(f): the file shrank while it was being read (changed by another process); results computed from it are wrong")
        exit(1)
    }
}
do {
    try command.run()
    exitIfShrunk()
    fflush(stdout)
    exit(0)
} catch let e as ExitCode {
    exitIfShrunk()
    fflush(stdout)
    exit(e.rawValue)
} catch let e as ValidationError {
    fflush(stdout)
    printErr("wscan: \(e.message)")
    exit(2)
} catch let e as CatalogError {
    // A name that matches several checkpoints is a usage error: the user must name one by path or id.
    fflush(stdout)
    printErr("wscan: \(e)")
    if case .ambiguous = e { exit(2) }
    exit(1)
} catch {
    fflush(stdout)
    // Bare `wscan` (and `wscan analyze`): ArgumentParser asks for the help text; print it and exit 0.
    if String(describing: type(of: error)) == "CommandError" || Wscan.exitCode(for: error) == .success { Wscan.exit(withError: error) }
    printErr("wscan: \(error)")
    exit(1)
}
