// Reads the block code that rpistream's test pattern draws into every frame:
// frame number and capture time (ms since the Unix epoch, comparable with
// Date.now() on the same machine), from decoded pixels.
// The layout is specified in rpistream/sources/blockcode.py; this is the same
// algorithm as its read(), and tests/test_blockcode.py holds the two together.

export const COLUMNS = 32; // the code is COLUMNS x ROWS cells at the top left
export const ROWS = 3;
const SYNC = [1, 0]; // columns 0 and 1 of every row
const FRAME_BITS = 26;
const TIME_BITS = 48;
const CRC_BITS = 16;
const THRESHOLD = 128;

// Side of one cell in pixels for a width×height picture.
export function cellSize(width, height) {
  let cell = Math.max(8, 4 * Math.floor(width / 320));
  if (COLUMNS * cell > width || ROWS * cell > height) {
    cell = Math.min(Math.floor(width / COLUMNS), Math.floor(height / ROWS));
  }
  return cell;
}

// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), bit by bit.
function crc16(bits) {
  let crc = 0xffff;
  for (const bit of bits) {
    const top = (crc >> 15) ^ bit;
    crc = (crc << 1) & 0xffff;
    if (top) crc ^= 0x1021;
  }
  return crc;
}

// Bits to a number; multiplication, not shifts, because JavaScript's bitwise
// operators are 32-bit and the capture time has 48 bits.
function value(bits) {
  let v = 0;
  for (const bit of bits) v = v * 2 + bit;
  return v;
}

// imageData: a canvas ImageData (RGBA bytes, row-major) whose top-left pixel
// is the decoded frame's. width and height are the frame's full size, which
// sets the cell size; they default to the image's, and the image may be just
// the code's corner (the 32 x 3 cells at the top left), which is all a reader
// needs to copy out of a large frame. Returns {frame, captureMs}, or null when
// there is no code or it is damaged.
export function readBlockCode(imageData, width = imageData.width, height = imageData.height) {
  const { data } = imageData;
  const stride = imageData.width;
  const cell = cellSize(width, height);
  if (cell < 2) return null;
  if (COLUMNS * cell > imageData.width || ROWS * cell > imageData.height) return null;
  const side = Math.max(1, Math.floor(cell / 2));
  const offset = Math.floor(cell / 4);
  const bits = [];
  for (let row = 0; row < ROWS; row++) {
    for (let col = 0; col < COLUMNS; col++) {
      let sum = 0;
      for (let y = row * cell + offset; y < row * cell + offset + side; y++) {
        for (let x = col * cell + offset; x < col * cell + offset + side; x++) {
          const i = (y * stride + x) * 4;
          sum += (data[i] * 77 + data[i + 1] * 150 + data[i + 2] * 29) >> 8;
        }
      }
      const bit = sum >= THRESHOLD * side * side ? 1 : 0;
      if (col < SYNC.length) {
        if (bit !== SYNC[col]) return null;
      } else {
        bits.push(bit);
      }
    }
  }
  const payload = bits.slice(0, FRAME_BITS + TIME_BITS);
  const crc = bits.slice(FRAME_BITS + TIME_BITS, FRAME_BITS + TIME_BITS + CRC_BITS);
  if (crc16(payload) !== value(crc)) return null;
  return {
    frame: value(payload.slice(0, FRAME_BITS)),
    captureMs: value(payload.slice(FRAME_BITS)),
  };
}
