// A small grpc-go Satellite client, built from Debian's grpc-go: the interop peer that is run
// against `satellite serve` (see ../matrix.sh). Each -op makes one call and checks its outcome:
//
//	-op get -x X -y Y [-map FILE]        GetImage succeeds (and matches the map file)
//	-op area -area X0,Y0,X1,Y1 [-map F]  GetImages streams every cell once, in reading order
//	                                     (rows from ur.y down to ll.y, x ascending), matching F
//	-op out-of-range -x X -y Y           GetImage fails with OUT_OF_RANGE
//	-op invalid-argument -area ...       GetImages fails with INVALID_ARGUMENT
//	-op deadline -area ... -deadline MS  GetImages fails with DEADLINE_EXCEEDED
//
// Exit 0 when the outcome is the expected one, 1 when it is not, 2 on a setup error.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "satellite/pb"
)

func setupError(format string, args ...interface{}) {
	log.Printf("error: "+format, args...)
	os.Exit(2)
}

func fail(format string, args ...interface{}) {
	log.Printf("FAIL: "+format, args...)
	os.Exit(1)
}

// loadRows reads a map file; rows[0] is the top of the map (y = len(rows)-1).
func loadRows(path string) []string {
	if path == "" {
		return nil
	}
	data, err := ioutil.ReadFile(path)
	if err != nil {
		setupError("%v", err)
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

func cellOf(rows []string, x, y int32) (byte, bool) {
	h := int32(len(rows))
	if y < 0 || y >= h || x < 0 || int(x) >= len(rows[h-1-y]) {
		return 0, false
	}
	return rows[h-1-y][x], true
}

func parseArea(text string) (*pb.Area, error) {
	parts := strings.Split(text, ",")
	if len(parts) != 4 {
		return nil, fmt.Errorf("-area %q: expected X0,Y0,X1,Y1", text)
	}
	var v [4]int32
	for i, p := range parts {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("-area %q: %v", text, err)
		}
		v[i] = int32(n)
	}
	return &pb.Area{Ll: &pb.Location{X: v[0], Y: v[1]}, Ur: &pb.Location{X: v[2], Y: v[3]}}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "server address")
	plaintext := flag.Bool("plaintext", false, "plaintext HTTP/2 instead of mutual TLS")
	caFile := flag.String("ca", "", "CA certificate (PEM) the server certificate must chain to")
	certFile := flag.String("cert", "", "client certificate (PEM)")
	keyFile := flag.String("key", "", "client private key (PEM)")
	serverName := flag.String("server-name", "", "name the server certificate must carry (default: the host of -addr)")
	op := flag.String("op", "get", "get | area | out-of-range | invalid-argument | deadline")
	x := flag.Int("x", 0, "column, from 0 at the left")
	y := flag.Int("y", 0, "row, from 0 at the bottom")
	areaText := flag.String("area", "", "X0,Y0,X1,Y1: lower-left and upper-right corners, inclusive")
	mapFile := flag.String("map", "", "map file to check the images against")
	deadline := flag.Int("deadline", 10000, "call deadline in milliseconds")
	quiet := flag.Bool("quiet", false, "do not print the images")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("grpc-go client: ")

	var creds grpc.DialOption
	if *plaintext {
		creds = grpc.WithInsecure()
	} else {
		if *caFile == "" || *certFile == "" || *keyFile == "" {
			setupError("mutual TLS needs -ca, -cert and -key (or pass -plaintext)")
		}
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			setupError("%v", err)
		}
		pem, err := ioutil.ReadFile(*caFile)
		if err != nil {
			setupError("%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			setupError("%s: no certificate", *caFile)
		}
		creds = grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{cert},
			RootCAs:      pool,
			ServerName:   *serverName,
			MinVersion:   tls.VersionTLS12,
		}))
	}
	rows := loadRows(*mapFile)

	// The dial itself is lazy; the call's deadline bounds connecting too.
	conn, err := grpc.Dial(*addr, creds)
	if err != nil {
		setupError("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	client := pb.NewSatelliteClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*deadline)*time.Millisecond)
	defer cancel()

	var area *pb.Area
	if *op == "area" || *op == "invalid-argument" || *op == "deadline" {
		if area, err = parseArea(*areaText); err != nil {
			setupError("%v", err)
		}
	}

	switch *op {
	case "get":
		img, err := client.GetImage(ctx, &pb.Location{X: int32(*x), Y: int32(*y)})
		if err != nil {
			fail("GetImage(%d, %d): %v", *x, *y, err)
		}
		if img.X != int32(*x) || img.Y != int32(*y) {
			fail("GetImage(%d, %d) answered for (%d, %d)", *x, *y, img.X, img.Y)
		}
		if rows != nil {
			want, ok := cellOf(rows, img.X, img.Y)
			if !ok || len(img.Img) != 1 || img.Img[0] != want {
				fail("GetImage(%d, %d) = %q, the map has %q", *x, *y, img.Img, want)
			}
		}
		if !*quiet {
			fmt.Printf("(%d, %d): %q\n", img.X, img.Y, img.Img)
		}

	case "area":
		stream, err := client.GetImages(ctx, area)
		if err != nil {
			fail("GetImages: %v", err)
		}
		ll, ur := area.Ll, area.Ur
		wantX, wantY := ll.X, ur.Y
		count, want := 0, int(ur.X-ll.X+1)*int(ur.Y-ll.Y+1)
		var text strings.Builder
		for {
			img, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				fail("GetImages after %d of %d images: %v", count, want, err)
			}
			if count >= want {
				fail("GetImages sent more than the %d images of the area", want)
			}
			if img.X != wantX || img.Y != wantY {
				fail("image %d is (%d, %d), expected (%d, %d) in reading order", count, img.X, img.Y, wantX, wantY)
			}
			if rows != nil {
				cell, ok := cellOf(rows, img.X, img.Y)
				if !ok || len(img.Img) != 1 || img.Img[0] != cell {
					fail("image (%d, %d) = %q, the map has %q", img.X, img.Y, img.Img, cell)
				}
			}
			text.Write(img.Img)
			count++
			if wantX++; wantX > ur.X {
				wantX = ll.X
				wantY--
				text.WriteByte('\n')
			}
		}
		if count != want {
			fail("GetImages sent %d images, the area has %d", count, want)
		}
		if !*quiet {
			fmt.Print(text.String())
		}
		log.Printf("%d images in reading order", count)

	case "out-of-range":
		img, err := client.GetImage(ctx, &pb.Location{X: int32(*x), Y: int32(*y)})
		expectCode(err, codes.OutOfRange, fmt.Sprintf("GetImage(%d, %d) = %v", *x, *y, img))

	case "invalid-argument", "deadline":
		code := codes.InvalidArgument
		if *op == "deadline" {
			code = codes.DeadlineExceeded
		}
		stream, err := client.GetImages(ctx, area)
		count := 0
		for err == nil {
			_, err = stream.Recv()
			if err == nil {
				count++
			}
		}
		if err == io.EOF {
			err = nil
		}
		expectCode(err, code, fmt.Sprintf("GetImages ended normally after %d images", count))
		log.Printf("after %d images", count)

	default:
		setupError("-op %q: expected get, area, out-of-range, invalid-argument or deadline", *op)
	}
}

// expectCode exits 1 unless err is a status with the wanted code; it prints the status.
func expectCode(err error, want codes.Code, otherwise string) {
	if err == nil {
		fail("expected %s, but %s", want, otherwise)
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != want {
		fail("expected %s, got %v", want, err)
	}
	fmt.Printf("%s: %s\n", st.Code(), st.Message())
}
