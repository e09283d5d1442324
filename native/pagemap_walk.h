// A whole round of PAGEMAP_SCAN calls in one native call: every range of a plan (one per VMA),
// each resumed from walk_end, the reported regions written as doubles into a caller's array.
// Issued from JS one ioctl at a time, a round paid a Node-API call, an argument object, a result
// object and BigInt conversions per ioctl: 3x the ioctls' own cost on 1 GiB (bench section 2).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "pagemap_scan.h"

namespace precopy {

struct WalkRange {
  ScanRequest req;  // start, end and masks (req.maxPages is ignored: see `limited`)
  // Pass max_pages = what is left of the call's page budget (WP matching write-protects only what
  // it reports: the caller asks for no more than its batch holds). Unlimited ranges are not
  // counted against the budget.
  bool limited = false;
};

// The walk's Float64Arrays, by position (binding.cc reads and writes them, native/index.ts fills
// and reads them): one range of `ranges` is WalkRangeField::Length numbers, the cursor is
// WalkCursorField::Length numbers, and region i of `meta` is the pair at 2i. native/index.ts
// spells the same positions as the const enums WalkRangeField, WalkCursorField and WalkMetaField:
// a change here must be made there too (and the other way round). A struct around an unscoped
// enum: the names are scoped as in TypeScript (WalkCursorField::Ioctls) and index arrays as they are.
struct WalkRangeField {
  enum : size_t {
    Start = 0,              // first address of the range
    End = 1,                // end of the range (exclusive); End == Start: nothing to walk
    Flags = 2,              // ScanRequest::flags (PM_SCAN_WP_MATCHING, PM_SCAN_CHECK_WPASYNC)
    CategoryInverted = 3,   // ScanRequest::categoryInverted
    CategoryMask = 4,       // ScanRequest::categoryMask
    CategoryAnyofMask = 5,  // ScanRequest::categoryAnyofMask
    ReturnMask = 6,         // ScanRequest::returnMask
    Limited = 7,            // WalkRange::limited (1 or 0)
    Length = 8,
  };
};
struct WalkCursorField {
  enum : size_t {
    Range = 0,             // WalkCursor::range
    Position = 1,          // WalkCursor::position
    Regions = 2,           // WalkCursor::regions (written back only)
    Ioctls = 3,            // WalkCursor::ioctls (read and written back: it accumulates)
    LimitedPages = 4,      // WalkCursor::limitedPages (written back only)
    UnlimitedRegions = 5,  // WalkCursor::unlimitedRegions (written back only)
    Length = 6,
  };
};
struct WalkMetaField {
  enum : size_t {
    Categories = 0,  // the region's PAGE_IS_* categories
    Range = 1,       // index of the range that reported it
    Length = 2,
  };
};

// Where a walk stands. Updated as the walk goes, also when it throws: regions already written
// stay valid (with WP matching they are write-protected again: their report must not be lost).
struct WalkCursor {
  size_t range = 0;             // range being walked (== ranges.size() when done)
  uint64_t position = 0;        // next address in that range (0 or below its start: from its start)
  size_t regions = 0;           // regions written by this call
  uint64_t ioctls = 0;          // PAGEMAP_SCAN ioctls issued (accumulates across calls)
  uint64_t limitedPages = 0;    // pages of this call's regions from limited ranges (<= budget)
  size_t unlimitedRegions = 0;  // this call's regions from unlimited ranges
};

// Where a walk writes its regions, `cap` of them: runs[2i], runs[2i+1] = start, page count (the
// layout of a batch's run list, so that a caller can copy them as they are); meta[2i..2i+1] =
// categories, index of the range (WalkMetaField).
struct WalkOut {
  double* runs;
  double* meta;
  size_t cap;
};

// Walks from the cursor until every range is done, out holds cap regions, or the limited ranges
// reported `budget` pages (budget > 0). A region adjacent to the previous one, from the same range
// and with the same categories, extends it. Throws SysError with the cursor at the failing range
// (a VMA may vanish meanwhile: the caller decides), or EIO if walk_end makes no progress.
void pagemapWalk(int pagemapFd, const std::vector<WalkRange>& ranges, uint64_t budget, const WalkOut& out,
                 WalkCursor& cursor);

}  // namespace precopy
