import CWscan
#if canImport(Glibc)
import Glibc
#endif

public enum CPU {
    /// The kernels are compiled for x86-64-v3; this says whether the running CPU can execute them.
    public static var supportsKernels: Bool { wscan_cpu_has_x86_64_v3() != 0 }

    /// OpenBLAS reads OPENBLAS_CORETYPE when it loads, so the choice must be made before the library is
    /// initialised: re-exec ourselves once with the variable set (never overriding a user's value).
    /// Debian's OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to SSE3 kernels otherwise.
    public static func ensureOpenBLASCoreType() {
        if getenv("OPENBLAS_CORETYPE") != nil || getenv("WSCAN_NO_REEXEC") != nil { return }
        guard let core = wscan_openblas_coretype() else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("WSCAN_NO_REEXEC", "1", 1)
        _ = execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed: carry on with the default kernels
    }

    public static var blasCore: String { String(cString: wscan_openblas_corename()) }
    public static func setBLASThreads(_ n: Int) { wscan_openblas_set_threads(Int32(n)) }
    public static var blasThreads: Int { Int(wscan_openblas_get_threads()) }
}
