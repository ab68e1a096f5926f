import CWscan
#if canImport(Glibc)
import Glibc
#endif

public enum CPU {
    /// The kernels are compiled for x86-64-v3; this says whether the running CPU can execute them.
    public static var supportsKernels: Bool { wscan_cpu_has_x86_64_v3() != 0 }

    /// OpenBLAS reads OPENBLAS_CORETYPE when it loads; Debian's 0.3.21 does not recognise recent Xeons and falls
    /// back to SSE3 kernels otherwise. CWscan loads OpenBLAS on first use and sets the variable from the CPU flags
    /// just before, unless the user set it (see cwscan.c).
    public static var blasCore: String { String(cString: wscan_openblas_corename()) }
    public static func setBLASThreads(_ n: Int) { wscan_openblas_set_threads(Int32(n)) }
    public static var blasThreads: Int { Int(wscan_openblas_get_threads()) }
}
