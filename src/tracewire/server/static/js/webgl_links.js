// Links drawn with WebGL on a GPU: one draw call of a vertex buffer (each link a quad, as wide as
// its level) built once per base redraw, into an offscreen canvas that the base canvas then copies
// under its nodes, so even a 700k-link graph is drawn link by link instead of bundled.
//
// `WebglLinks.create()` returns null without WebGL or with a software one (the renderer then keeps
// its canvas 2D drawing, which is faster there; see create).

const VERTEX = `
attribute vec2 position;
attribute vec4 color;
uniform vec2 scale;   // view zoom k, then 2 / canvas size (CSS px)
uniform vec3 offset;  // view translation (CSS px), then the canvas height (CSS px)
varying vec4 vColor;
void main() {
  vec2 screen = position * scale.x + offset.xy;
  gl_Position = vec4(screen.x * scale.y - 1.0, 1.0 - screen.y * (2.0 / offset.z), 0.0, 1.0);
  vColor = color;
}`;
const FRAGMENT = `
precision mediump float;
varying vec4 vColor;
void main() { gl_FragColor = vec4(vColor.rgb * vColor.a, vColor.a); }`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader) || "shader");
  return shader;
}

export class WebglLinks {
  /**
   * A WebGL link layer, or null where WebGL is unavailable (or fails to set up) or is a software
   * rasteriser (SwiftShader, llvmpipe) unless `force`: measured in headless Chromium on a loaded
   * 2-core box, SwiftShader takes ~3 s for 100k links, where canvas 2D hairlines take ~1 s.
   */
  static create({ force = false } = {}) {
    const canvas = document.createElement("canvas");
    const gl = canvas.getContext("webgl", { antialias: true, premultipliedAlpha: true, preserveDrawingBuffer: true });
    if (!gl) return null;
    const info = gl.getExtension("WEBGL_debug_renderer_info");
    const device = info ? String(gl.getParameter(info.UNMASKED_RENDERER_WEBGL)) : "";
    if (!force && /swiftshader|llvmpipe|software/i.test(device)) return null;
    try {
      return new WebglLinks(canvas, gl);
    } catch (error) {
      console.warn("WebGL link layer unavailable, drawing links with canvas 2D:", error);
      return null;
    }
  }

  constructor(canvas, gl) {
    this.canvas = canvas;
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || "link");
    this.program = program;
    this.position = gl.getAttribLocation(program, "position");
    this.color = gl.getAttribLocation(program, "color");
    this.scale = gl.getUniformLocation(program, "scale");
    this.offset = gl.getUniformLocation(program, "offset");
    this.buffers = { position: gl.createBuffer(), color: gl.createBuffer() };
  }

  /**
   * Draw the links into this layer's canvas (device pixels `width` x `height`).
   * `batches`: [{links (link ids), rgba [r, g, b, a] (0..255), width (CSS px)}],
   * drawn in order (later on top). `ends(e)` fills `[x0, y0, x1, y1]` (world units) of link e.
   */
  draw({ batches, endsOf, view, cssWidth, cssHeight, dpr }) {
    const { gl, canvas } = this;
    const width = Math.round(cssWidth * dpr), height = Math.round(cssHeight * dpr);
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    gl.viewport(0, 0, width, height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(this.program);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA); // premultiplied "over"
    gl.uniform2f(this.scale, view.k, 2 / cssWidth);
    gl.uniform3f(this.offset, view.tx, view.ty, cssHeight);
    this.drawQuads(batches, endsOf, view.k);
    return canvas;
  }

  /** Links as two triangles each, `width` CSS px across at zoom k (world width / k). */
  drawQuads(batches, endsOf, k) {
    const n = batches.reduce((sum, b) => sum + b.links.length, 0);
    if (!n) return;
    const positions = new Float32Array(n * 12);
    const colors = new Uint8Array(n * 24);
    const ends = [0, 0, 0, 0];
    let v = 0;
    for (const { links, rgba, width } of batches) {
      const half = width / (2 * k);
      for (let j = 0; j < links.length; j++) {
        endsOf(links[j], ends);
        const [x0, y0, x1, y1] = ends;
        const length = Math.hypot(x1 - x0, y1 - y0) || 1;
        const nx = (-(y1 - y0) / length) * half, ny = ((x1 - x0) / length) * half;
        const p = v * 2;
        positions[p] = x0 + nx; positions[p + 1] = y0 + ny;
        positions[p + 2] = x0 - nx; positions[p + 3] = y0 - ny;
        positions[p + 4] = x1 + nx; positions[p + 5] = y1 + ny;
        positions[p + 6] = x1 + nx; positions[p + 7] = y1 + ny;
        positions[p + 8] = x0 - nx; positions[p + 9] = y0 - ny;
        positions[p + 10] = x1 - nx; positions[p + 11] = y1 - ny;
        for (let c = 0; c < 6; c++) colors.set(rgba, (v + c) * 4);
        v += 6;
      }
    }
    this.upload(positions, colors);
    this.gl.drawArrays(this.gl.TRIANGLES, 0, 6 * n);
  }

  upload(positions, colors) {
    const { gl } = this;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.position);
    gl.bufferData(gl.ARRAY_BUFFER, positions, gl.STREAM_DRAW);
    gl.enableVertexAttribArray(this.position);
    gl.vertexAttribPointer(this.position, 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.buffers.color);
    gl.bufferData(gl.ARRAY_BUFFER, colors, gl.STREAM_DRAW);
    gl.enableVertexAttribArray(this.color);
    gl.vertexAttribPointer(this.color, 4, gl.UNSIGNED_BYTE, true, 0, 0);
  }
}
