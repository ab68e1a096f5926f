import XCTest
@testable import WscanKernels
final class SmokeTests: XCTestCase { func testStats() { var s = TensorStats(); let a: [Float] = [1, 2, 3]; StatsKernel.accumulate(a, 3, into: &s); XCTAssertEqual(s.sum, 6) } }
